"""The IVR (语音导航): FastAGI sessions that greet, route and serve callers."""
