"""One package per feature: its HTTP routes and Socket.IO handlers side by side."""
