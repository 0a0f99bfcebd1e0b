"""Keystone credentials for the Neutron adapter: keystoneauth1's plugin loaders, without openstacksdk.

``auth_plugin_options`` reads a keystoneauth plugin's options from an oslo config section the way
keystonemiddleware does; ``neutronconf.neutron_access`` calls it to check ``[keystone_authtoken]``
before the daemon starts (importing this module is cheap: no openstacksdk), and
``keystone_session`` builds the session ``openstack_neutron.OpenStackNeutron.from_access`` hands to
openstacksdk. Nothing is contacted here: authentication happens on the first API call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import session as ks_session

from rpcdaemon.access import NeutronAccess


class AuthOptionError(ValueError):
    """A keystoneauth plugin cannot be configured from the section: ``key`` names the culprit."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


# Plugins that authenticate a user with a password, or with a token: they also need a user (or a
# token) and a scope, which keystoneauth only finds missing when the first token is requested.
_PASSWORD_PLUGINS = ("password", "v3password", "v2password")
_SCOPE_KEYS = ("project_name", "project_id", "system_scope", "domain_id", "domain_name", "tenant_name", "tenant_id")


def auth_plugin_options(auth_type: str, section: Mapping[str, str]) -> dict[str, Any]:
    """The options of keystoneauth plugin ``auth_type``, read from an oslo config section as
    keystonemiddleware reads them: each option under its oslo name (``dest``) or one of its deprecated
    names. Raises ``AuthOptionError`` for an unknown plugin or a missing required option."""
    try:
        loader: Any = ks_loading.get_plugin_loader(auth_type)
    except ks_exc.NoMatchingPlugin:
        known = " ".join(sorted(ks_loading.get_available_plugin_names()))
        raise AuthOptionError("auth_type", f"unknown keystoneauth plugin {auth_type!r} (known: {known})") from None
    options: dict[str, Any] = {}
    for opt in loader.get_options():
        for name in (opt.dest, *(old.dest for old in opt.deprecated)):
            text = section.get(name)
            if text:
                options[opt.dest] = _option_value(opt, name, text)
                break
    missing = [opt.dest for opt in loader.get_options() if opt.required and opt.dest not in options]
    if auth_type in _PASSWORD_PLUGINS:
        if not (options.get("username") or options.get("user_id")):
            missing.append("username")
        if not options.get("password"):
            missing.append("password")
    if auth_type in (*_PASSWORD_PLUGINS, "token", "v3token") and not any(options.get(k) for k in _SCOPE_KEYS):
        missing.append("project_name")
    if missing:
        reason = (f"missing {', '.join(missing)} (auth_type {auth_type}; user_id may stand for username, "
                  "project_id, system_scope or domain_id for project_name)")
        raise AuthOptionError(missing[0], reason)
    return options


def _option_value(opt: Any, name: str, text: str) -> Any:
    if opt.type is bool:
        lowered = text.lower()
        if lowered not in ("true", "false", "yes", "no", "on", "off", "1", "0"):
            raise AuthOptionError(name, "expected true or false")
        return lowered in ("true", "yes", "on", "1")
    try:
        return opt.type(text)
    except (TypeError, ValueError):
        raise AuthOptionError(name, f"expected a {getattr(opt.type, '__name__', 'value')}") from None


def _keystone_section(access: NeutronAccess) -> dict[str, str]:
    """The section the plugin reads: ``access.auth_options`` over the explicit password-plugin fields."""
    base = {
        "auth_url": access.auth_url, "username": access.username, "password": access.password,
        "project_name": access.project_name, "user_domain_id": access.user_domain_id,
        "project_domain_id": access.project_domain_id,
    }
    # A domain id, when given, names the domain; the name is then not sent at all.
    if not access.user_domain_id:
        base["user_domain_name"] = access.user_domain_name
    if not access.project_domain_id:
        base["project_domain_name"] = access.project_domain_name
    section = {key: value for key, value in base.items() if value}
    section.update(access.auth_options)
    return section


def keystone_session(access: NeutronAccess) -> ks_session.Session:
    """A keystoneauth session authenticating as ``access`` says (nothing is contacted yet)."""
    loader: Any = ks_loading.get_plugin_loader(access.auth_type)
    plugin = loader.load_from_options(**auth_plugin_options(access.auth_type, _keystone_section(access)))
    cert: Any = (access.certfile, access.keyfile) if access.certfile and access.keyfile else access.certfile
    verify: Any = access.cafile or not access.insecure
    return ks_session.Session(auth=plugin, verify=verify, cert=cert, app_name="rpcdaemon")
