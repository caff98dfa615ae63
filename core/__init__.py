"""The base under every room: settings, storage, errors, the event bus, Redis, clocks,
background loops and phone numbers. It imports no room."""
