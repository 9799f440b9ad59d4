"""Every console page under one router, mounted at ``/ui`` and left out of the OpenAPI
document (the console is HTML for people; the admin and usage APIs are the contract)."""

from __future__ import annotations

from fastapi import APIRouter

from ingress.console import audit_page, keys_pages, ops_pages, pages, playground

router = APIRouter(include_in_schema=False)
for part in (pages.router, keys_pages.router, ops_pages.router, playground.router,
             audit_page.router):
    router.include_router(part, prefix="/ui")

install = pages.install
