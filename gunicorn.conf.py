"""gunicorn settings, all from the validated environment (config.py), so start.sh and the app agree."""

from config import load_config

_config = load_config()

worker_class = "gthread"
workers = 1  # Socket.IO sessions live in this process's memory; scale out with more instances (README)
threads = _config["GUNICORN_THREADS"]
worker_connections = _config["GUNICORN_WORKER_CONNECTIONS"]
bind = [f"{_config['HOST']}:{_config['PORT']}"]
timeout = _config["GUNICORN_TIMEOUT"]
graceful_timeout = _config["GUNICORN_GRACEFUL_TIMEOUT"]
keepalive = _config["GUNICORN_KEEPALIVE"]
loglevel = "warning" if _config["LOG_LEVEL"] in ("INFO", "WARNING") else _config["LOG_LEVEL"].lower()
errorlog = "-"
accesslog = None
# gunicorn 27's control socket lives at one path per user; several instances on one machine would fight over it.
control_socket_disable = True
