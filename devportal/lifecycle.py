"""The app's life on the portal: install (installer page or ONAPPINSTALL), installFinish,
update (ONAPPUPDATE) and uninstall (ONAPPUNINSTALL)."""
from __future__ import annotations

import json
import secrets

import requests

from devportal.oauth import event_scope
from devportal.phpquery import flatten

DEFAULT_SCOPE = "crm,user,department,placement,im,log,task,bizproc,telephony"


class AppLifecycleMixin:
    """DevPortal's installed app: installing, updating and uninstalling it."""

    def install_app(self, app_url: str, client_id: str, client_secret: str, scope: str = DEFAULT_SCOPE,
                    api_only: bool = False, install_path: str = "/install", finish: bool = True,
                    lang: str = "ru", page_path: str = "/app") -> dict:
        """Install like a portal: POST the installer page (or ONAPPINSTALL for an API-only app)."""
        tokens = self.register_app(app_url, client_id, client_secret, scope, installed=api_only,
                                   install_path=install_path, page_path=page_path)
        application_token = tokens["application_token"]
        url = self.app["app_url"] + install_path
        if api_only:
            form = {"event": "ONAPPINSTALL",
                    "data": {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": lang},
                    "ts": int(self.ts()),
                    "auth": {"access_token": tokens["access_token"], "expires": tokens["expires"],
                             "expires_in": self.token_ttl, "scope": event_scope(scope), "domain": self.domain,
                             "server_endpoint": self.auth_endpoint, "status": "L",
                             "client_endpoint": self.rest_endpoint, "member_id": self.member_id,
                             "user_id": 1, "refresh_token": tokens["refresh_token"],
                             "application_token": application_token}}
            response = requests.post(url, data=flatten(form), timeout=30)
        else:
            response = requests.post(url, params=self.page_query(lang),
                                     data=self.page_form(tokens, "DEFAULT", {}), timeout=60)
            if finish:
                self.finish_install(lang)
                self.wait_for_deliveries(timeout=60)  # ONAPPINSTALL reached the app (or failed)
        return {**tokens, "application_token": application_token, "member_id": self.member_id,
                "domain": self.domain, "client_endpoint": self.rest_endpoint, "status_code": response.status_code,
                "answer": response.text}

    def register_app(self, app_url: str, client_id: str, client_secret: str, scope: str = DEFAULT_SCOPE,
                     installed: bool = True, install_path: str = "/install", page_path: str = "/app") -> dict:
        """Put the app on the portal without any POST (benchmarks, scripts); returns admin tokens."""
        with self.lock:
            application_token = secrets.token_hex(16)
            self.app = {"client_id": client_id, "client_secret": client_secret, "app_url": app_url.rstrip("/"),
                        "scope": scope, "application_token": application_token, "installed": installed,
                        "api_only": installed, "install_path": install_path, "page_path": page_path,
                        "code": client_id, "version": 1,
                        "id": str(self._next("app"))}
            return {**self.issue_tokens(1), "application_token": application_token}

    def page_query(self, lang: str = "ru") -> dict:
        return {"DOMAIN": self.domain, "PROTOCOL": "1" if self.base_url.startswith("https") else "0",
                "LANG": lang, "APP_SID": secrets.token_hex(16)}

    def page_form(self, tokens: dict, placement: str, options: dict) -> dict:
        return {"AUTH_ID": tokens["access_token"], "AUTH_EXPIRES": str(self.token_ttl),
                "REFRESH_ID": tokens["refresh_token"], "SERVER_ENDPOINT": self.auth_endpoint,
                "member_id": self.member_id, "status": "L", "PLACEMENT": placement,
                "PLACEMENT_OPTIONS": json.dumps(options, ensure_ascii=False, separators=(",", ":"))}

    def finish_install(self, lang: str = "ru") -> None:
        """What BX24.installFinish() does: from now on events flow and placements show, and the
        ONAPPINSTALL handler bound during the install gets its event, with the admin's tokens and
        the application_token (api-reference/common/events/on-app-install.md)."""
        with self.lock:
            if self.app is None:
                return
            self.app["installed"] = True
            version = str(self.app["version"])
        self.fire("ONAPPINSTALL", None, 1, data={"VERSION": version, "ACTIVE": "Y", "INSTALLED": "Y",
                                                 "LANGUAGE_ID": lang}, refresh=True)

    def update_app(self, version: int | None = None, finish: bool = True, lang: str = "ru") -> dict:
        """A new version of the app (api-reference/common/events/on-app-update.md): the portal keeps
        the app's tokens but drops its event handlers and robots and issues a new application_token;
        ONAPPUPDATE goes to the handlers bound for it before the drop (VERSION, PREVIOUS_VERSION, the
        new token). A UI app's installer page opens again (then installFinish: ONAPPINSTALL to
        whatever the installer bound); an API-only app has only the event to go on."""
        with self.lock:
            if self.app is None:
                raise KeyError("no app is installed")
            app = self.app
            previous = app["version"]
            app["version"] = version or app["version"] + 1
            app["application_token"] = secrets.token_hex(16)
            handlers = [h for h in self.bound_events if h["event"] == "ONAPPUPDATE" and not h["offline"]]
            self.bound_events.clear()
            self.offline_events.clear()
            self.robots.clear()
            app["installed"] = app["api_only"]
            tokens = self.issue_tokens(1)
            forms = [(h["handler"], {"event": "ONAPPUPDATE", "event_handler_id": h["ID"],
                                     "data": {"VERSION": str(app["version"]), "PREVIOUS_VERSION": str(previous),
                                              "LANGUAGE_ID": lang},
                                     "ts": int(self.ts()),
                                     "auth": {**self.auth_block(None), "access_token": tokens["access_token"],
                                              "expires": tokens["expires"], "expires_in": self.token_ttl,
                                              "refresh_token": tokens["refresh_token"], "status": "L"}})
                     for h in handlers]
        for url, form in forms:
            self._enqueue({"url": url, "pairs": flatten(form), "kind": "event", "event": "ONAPPUPDATE"})
        self.wait_for_deliveries(timeout=60)
        status, text = None, ""
        if app["api_only"]:
            last = next((d for d in reversed(self.deliveries) if d.get("event") == "ONAPPUPDATE"), None)
            status = last["status"] if last else None
        else:
            response = requests.post(app["app_url"] + app["install_path"], params=self.page_query(lang),
                                     data=self.page_form(tokens, "DEFAULT", {}), timeout=60)
            status, text = response.status_code, response.text
            if finish:
                self.finish_install(lang)
                self.wait_for_deliveries(timeout=60)
        return {**tokens, "application_token": app["application_token"], "status_code": status, "answer": text,
                "update_deliveries": len(forms)}

    def uninstall_app(self, clean: bool = True, lang: str = "ru") -> int:
        """POST ONAPPUNINSTALL (no tokens) to each bound handler; drop handlers, placements, tokens."""
        with self.lock:
            if self.app is None:
                return 0
            handlers = [h for h in self.bound_events if h["event"] == "ONAPPUNINSTALL" and not h["offline"]]
            form_auth = {"domain": self.domain, "server_endpoint": self.auth_endpoint,
                         "client_endpoint": self.rest_endpoint, "member_id": self.member_id,
                         "application_token": self.app["application_token"]}
            forms = [(h["handler"], {"event": "ONAPPUNINSTALL", "event_handler_id": h["ID"],
                                     "data": {"LANGUAGE_ID": lang, "CLEAN": "1" if clean else "0"},
                                     "ts": int(self.ts()), "auth": form_auth}) for h in handlers]
            self.bound_events.clear()
            self.offline_events.clear()
            self.placements.clear()
            self.robots.clear()
            self.access_tokens.clear()
            self.refresh_tokens.clear()
            if clean:
                self.options.clear()
                self.user_options.clear()
            self.app = None
        for url, form in forms:
            self._enqueue({"url": url, "pairs": flatten(form), "kind": "event", "event": "ONAPPUNINSTALL"})
        return len(forms)
