"""The site's routes, its pages in the default language at no language prefix
(``prefix_default_language=False``): ``/stream/`` in English, ``/fr/stream/`` in French."""

from django.conf.urls.i18n import i18n_patterns
from django.urls import LocalePrefixPattern, path

from django_site import views
from django_site.urls import urlpatterns as site_patterns

urlpatterns = [p for p in site_patterns if not isinstance(p.pattern, LocalePrefixPattern)]
urlpatterns += i18n_patterns(
    path("about/", views.show),
    path("stream/", views.stream),
    path("in-english/", views.in_english),
    path("<slug:section>/news/", views.show),  # /en/news/: an English page, section "en"
    prefix_default_language=False,
)
