"""A small Django project that tests/http/test_django_site.py serves with gunicorn and uvicorn."""
