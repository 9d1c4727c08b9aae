"""``check-endpoint``: send an endpoint what an exporter sends, and report what it does wrong.

    tls ─▶ oauth token ─▶ samples (PUT/POST, json/ndjson) ─▶ large bulk ─▶ re-sent bulk
        ─▶ gzip bulk ─▶ auth: no credentials ─▶ auth: wrong credentials ─▶ invalid body
        ─▶ response time

Requests go through the exporter's own code: its TLS context (certificates always verified), its
``Sender`` and credentials (Basic, or the OAuth2 client-credentials token request), its flush rule
and bulk body, so a PASS means the real exporter will get on with the endpoint. With ``--index``,
bodies are Elasticsearch bulks (an ``index`` action before each session, as an export with
``sendDirect`` sends them), and an answer counts as accepted only when every item succeeded. Each check is a
probe (I/O, through ``Probe``) followed by a judge, a pure function from what came back to a
``Verdict``; the list of checks is data (``CHECKS``). A failed ``tls`` or ``oauth token`` ends the
run, since every later request would fail the same way.

Modules: ``verdicts`` (the pure judges), ``bodies`` (what is sent), ``probe`` (the I/O), ``checks``
(their order) and ``command`` (the command and its table).
"""
