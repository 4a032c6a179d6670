"""gunicorn settings, all from the validated environment (config.py), so start.sh and the app agree."""

from config import load_config
from utils.logging_setup import ACCESS_LOG_FORMAT, gunicorn_logger_class

_config = load_config()

# gthread, with request heads and bodies read off the thread pool (integration/request_reader.py: slowloris defence)
worker_class = "integration.request_reader.RequestReadingWorker"
workers = 1  # Socket.IO sessions live in this process's memory; scale out with more instances (README)
threads = _config["GUNICORN_THREADS"]
worker_connections = _config["GUNICORN_WORKER_CONNECTIONS"]
bind = [f"{_config['HOST']}:{_config['PORT']}"]
timeout = _config["GUNICORN_TIMEOUT"]
graceful_timeout = _config["GUNICORN_GRACEFUL_TIMEOUT"]
keepalive = _config["GUNICORN_KEEPALIVE"]
loglevel = "warning" if _config["LOG_LEVEL"] in ("INFO", "WARNING") else _config["LOG_LEVEL"].lower()
errorlog = "-"
accesslog = "-" if _config["ACCESS_LOG"] else None
access_log_format = ACCESS_LOG_FORMAT
logger_class = gunicorn_logger_class(_config["LOG_FORMAT"])  # gunicorn's own lines in our format, secrets redacted
# gunicorn 27's control socket lives at one path per user; several instances on one machine would fight over it.
control_socket_disable = True


def when_ready(server):
    """Development only: the start-up block (dashboard login, API key, curl, token), printed by the master once it
    listens, so a worker restart never prints it again (blueprints/demo/banner.py)."""
    from blueprints.demo.banner import first_run_banner

    banner = first_run_banner(_config)
    if banner:
        print(banner, flush=True)


def post_worker_init(worker):
    """SIGTERM drains the app before gunicorn stops the worker (utils/drain.py); requests gunicorn refuses itself
    get our JSON error shape (integration/gunicorn_errors.py); an answer that leaves more body unread than gunicorn
    drains closes the connection and says so (integration/gunicorn_keepalive.py); out of descriptors, a new
    connection is answered 503 instead of ending the worker (integration/gunicorn_descriptors.py); the app built,
    full garbage collections leave out what survived the previous ones (GC_FREEZE, utils/gc_policy.py)."""
    from integration.gunicorn_descriptors import install_descriptor_refusals
    from integration.gunicorn_errors import install_json_error_pages
    from integration.gunicorn_keepalive import install_keepalive_close
    from utils.drain import install_sigterm_drain
    from utils.gc_policy import install_gc_policy

    install_sigterm_drain(worker)
    install_json_error_pages()
    install_keepalive_close()
    install_descriptor_refusals()
    install_gc_policy(_config["GC_FREEZE"])  # last: what the steps above built is frozen with the app


def worker_int(worker):
    """SIGINT/SIGQUIT (quick shutdown): close every session at once, so no websocket thread holds the exit."""
    from utils.drain import drain_of

    drain = drain_of(worker)
    if drain is not None:
        drain.close_all_now()
