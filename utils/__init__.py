"""Cross-cutting helpers: Socket.IO error handling, logging, metrics, readiness."""
