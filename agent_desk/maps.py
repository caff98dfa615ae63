"""The desk's map helpers live a floor down, in tickets.maps, so that the citizens' portal
(channels) draws the same map; the desk's pages keep importing them from here."""

from tickets.maps import grids as grids
from tickets.maps import page_settings as page_settings
from tickets.maps import shown as shown
from tickets.maps import stored_point as stored_point
from tickets.maps import uses_gcj02 as uses_gcj02
