"""A writer run inside a node: inserts numbered rows over the local socket, printing each id
only after its commit returned (an acknowledged write). Used by the replication tests.

    python writer.py SOCKET_DIR TABLE START COUNT
"""

import sys
import time

import psycopg

sock, table, start, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
conn = psycopg.connect(host=sock, dbname="esc", user="postgres", autocommit=True, connect_timeout=5)
conn.execute(f"create table if not exists {table} (id int primary key)")
print("ready", flush=True)
for i in range(start, start + count):
    conn.execute(f"insert into {table} values (%s)", (i,))
    print(f"ack {i}", flush=True)
    time.sleep(0.005)
