"""Agent desk (坐席工作台): the agents' and supervisors' web desk and live wallboard.

Its views call the telephony and tickets services; it owns no tables of theirs.
"""
