"""gunicorn settings of the web app (Procfile `web:`; gunicorn also reads this file by itself when
started from the repository root). Chosen by measuring event intake (bench/intake_gunicorn.py,
wrk on 127.0.0.1, PostgreSQL, 2 cores shared by wrk, gunicorn and PostgreSQL).

Event intake is CPU-bound Python (about 0.5 ms per event in the worker) plus one PostgreSQL
statement; the GIL lets one worker use one core. So: one worker per core, each with a few threads
so that a worker waiting on PostgreSQL (the commit's WAL flush) serves the next event meanwhile.
More workers than cores only added context switches and p99 on the 2-core bench.
"""
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# WEB_CONCURRENCY is the usual platform knob for the number of workers.
workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 2)
worker_class = "gthread"
threads = int(os.environ.get("NEZABYT_WEB_THREADS") or 4)
# The portal's deliveries come in bursts; keeping the connection spares a TCP handshake per event.
keepalive = 5
# The workers' heartbeat files on tmpfs: on a busy disk (PostgreSQL writing WAL on the same machine)
# a heartbeat write to disk can stall a worker for tens of milliseconds.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
