"""Routes of every kind: path, re_path (named and unnamed groups), include prefixes of both
kinds, and i18n_patterns."""

from django.conf.urls.i18n import i18n_patterns
from django.urls import include, path, re_path

from django_site import views

api = [
    path("orders/<int:order_id>/", views.show),
    re_path(r"^legacy/(?P<slug>[a-z]+)/$", views.show),
]

urlpatterns = [
    path("orders/<int:order_id>", views.show),
    re_path(r"^legacy/(?P<slug>[a-z]+)/$", views.show),
    re_path(r"^archive/([0-9]{4})/([0-9]{2})/$", views.show),
    re_path(r"^files/(?P<name>[\w.-]+)\.json$", views.show),
    path("api/v<int:version>/", include(api)),
    re_path(r"^shop/(?P<shop>[a-z]+)/", include(api)),
    path("missing/<int:item_id>", views.missing),
    path("forbidden", views.forbidden),
    path("suspicious", views.suspicious),
    path("crash", views.crash),
    path("stream", views.stream),
    path("in-flight", views.in_flight),
    path("trace-seen", views.trace_seen),
    path("refused", views.refused),
    path("slow", views.slow),
    path("hold", views.hold),
    path("held", views.held),
    path("health", views.health),
    path("health/deep", views.health_deep),
    path("started-with", views.started_with),
    path("finished-with", views.finished_with),
    path("shared", views.shared),
]
urlpatterns += i18n_patterns(
    path("about/", views.show),
    re_path(r"^news/(?P<year>[0-9]{4})/$", views.show),
)
