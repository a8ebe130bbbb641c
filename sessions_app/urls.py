"""The app's URLs; a site includes them (`path("", include("sessions_app.urls"))`)."""

from django.urls import include, path

from sessions_app import pages

urlpatterns = [
    path("", include("sessions_app.api.urls")),
    path("", pages.home, name="home"),
    path("login/", pages.LoginPage.as_view(), name="login"),
    path("logout/", pages.LogoutPage.as_view(), name="logout"),
]
