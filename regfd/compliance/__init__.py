"""What follows a decision: the records, the quarantine, the disclosure clock and the notifications."""
