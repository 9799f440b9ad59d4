"""The admin console at ``/ui``: server-rendered pages over the same stores and analytics
the admin and usage APIs use, so nothing here is the only way to do a thing."""
