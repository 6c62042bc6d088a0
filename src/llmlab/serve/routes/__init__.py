"""The server's routers, one file per endpoint group; create_app includes them all."""
