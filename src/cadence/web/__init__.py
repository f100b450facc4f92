"""The subscriber-facing web app (FastAPI): ``from cadence.web.app import create_app``.

Kept empty so that importing one module of the package (the webhooks, say) does not build the
whole app.
"""
