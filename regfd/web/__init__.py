"""regfd web: the compliance console (held queue, decisions, records, disclosures, directory, JSON API).

A Starlette application (app.py) rendered with Jinja2 and enhanced by htmx
(a static file), served by uvicorn (cli/web.py) on loopback or a unix
socket behind the company's TLS reverse proxy. One module per concept:
auth, queue, message, decisions, records, disclosures, directory, api.
"""
