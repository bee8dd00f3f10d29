"""escmanager: the northbound service the HA pair protects.

It runs on both nodes; the agent activates it on the primary through the control socket
(``control.py``). Every write is a durable transaction in the replicated database, so a new
primary answers retries with the first result and resumes what the old one left half-done.

    main.py      process: logging, certificate, listeners (HTTPS, HTTP, portal, control socket)
    service.py   the activation switch, the pool, health; owns the worker
    api.py       the /v0 REST API (FastAPI); auth.py checks basic credentials
    portal.py    the operator portal on portal_port: one self-refreshing page, status.json
    store.py     SQL of the accept paths: transaction + effect in one database transaction
    paging.py    the cursors of the list routes (keyset pagination: ?after= and next)
    worker.py    carries out long-running transactions and delivers callbacks
    db.py        connection settings and the versioned schema migrations
    users.py     API users, hashed with scrypt (for ``escadm user``)
    vim.py       the VIM interface, an in-memory fake, and the choice of VIM (the lab VIM,
                 ``vim = "lab"``, lives in the lab package esclab, not in the product)
    models.py    request bodies and header values, validated; answers' shapes for the OpenAPI
"""
