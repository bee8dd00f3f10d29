"""escmanager: the northbound service the HA pair protects.

It runs on both nodes; the agent activates it on the primary through the control socket
(``control.py``). Every write is a durable transaction in the replicated database, so a new
primary answers retries with the first result and resumes what the old one left half-done.

    main.py      process: logging, certificate, listeners (HTTPS, optional HTTP, control socket)
    service.py   the activation switch, the pool, health; owns the worker
    api.py       the /v0 REST API (FastAPI); auth.py checks basic credentials
    store.py     SQL of the accept paths: transaction + effect in one database transaction
    worker.py    carries out long-running transactions and delivers callbacks
    db.py        connection settings and the versioned schema migrations
    users.py     API users, hashed with scrypt (for ``escadm user``)
    vim.py       the VIM interface and an in-memory fake
    models.py    request bodies and header values, validated
"""
