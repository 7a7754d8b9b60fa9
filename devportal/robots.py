"""The portal's robots: stage automation rules, the robot POST and its event_token, which
designers show a robot (its FILTER), and the robot's reply (bizproc.event.send)."""
from __future__ import annotations

import secrets

from devportal.crm import DOC_IDS
from devportal.errors import RestError
from devportal.phpquery import as_list, flatten


class RobotsMixin:
    """DevPortal's robots and their replies."""

    def _stage_entered(self, entity: str, rid: int, stage: str | None) -> None:
        for hook in self.stage_robots:
            if hook["document_type"] == entity and hook["stage_id"] == stage:
                self._robot_job(hook["code"], entity, rid, hook["properties"], None, queued=True)

    def bind_stage_robot(self, document_type: str, stage_id: str, code: str, properties: dict | None = None):
        """An automation rule: moving a deal/lead into `stage_id` runs robot `code`."""
        with self.lock:
            self.stage_robots.append({"document_type": document_type, "stage_id": stage_id, "code": code,
                                      "properties": dict(properties or {})})

    def run_robot(self, code: str, document_type: str, document_id: int, properties: dict | None = None,
                  use_subscription: str | None = None) -> str:
        """POST the robot form to the robot's HANDLER now; returns the event_token. The form's
        use_subscription is the robot's registered USE_SUBSCRIPTION unless given."""
        return self._robot_job(code, document_type, int(document_id), properties or {}, use_subscription,
                               queued=False)

    def robot_shown(self, code: str, document_type: str) -> bool:
        """Does the automation designer of `document_type` offer robot `code`? A robot's FILTER
        (bizproc-robot-add.md) INCLUDEs or EXCLUDEs document types, full or partial
        (['crm', 'CCrmDocumentDeal']), or editions ('b24' cloud, 'box' on-premise: we are cloud);
        a robot with no FILTER shows everywhere."""
        robot = self.robots.get(code)
        if robot is None or document_type not in DOC_IDS:
            return False
        document = ["crm", *DOC_IDS[document_type]]
        rules = {str(k).upper(): as_list(v) for k, v in (robot.get("FILTER") or {}).items()} \
            if isinstance(robot.get("FILTER"), dict) else {}

        def matches(rule) -> bool:
            if isinstance(rule, str):
                return rule == "b24"
            parts = [str(p) for p in as_list(rule)]
            return bool(parts) and document[:len(parts)] == parts

        if rules.get("INCLUDE") and not any(matches(r) for r in rules["INCLUDE"]):
            return False
        return not any(matches(r) for r in rules.get("EXCLUDE") or [])

    def robots_shown(self, document_type: str) -> list[dict]:
        """The robots the designer of `document_type` lists (CODE and NAME)."""
        with self.lock:
            return [{"CODE": code, "NAME": r["NAME"]} for code, r in self.robots.items()
                    if self.robot_shown(code, document_type)]

    def _robot_job(self, code, document_type, document_id, properties, use_subscription, queued) -> str:
        with self.lock:
            robot = self.robots.get(code)
            if robot is None:
                raise KeyError(f"robot {code!r} is not registered")
            if not self.robot_shown(code, document_type):
                raise KeyError(f"robot {code!r} is not offered for {document_type}: its FILTER excludes it")
            doc_class, doc_prefix = DOC_IDS[document_type]
            workflow_id = secrets.token_hex(12)
            event_token = f"{workflow_id}|A{secrets.token_hex(6)}|{secrets.token_hex(16)}.{secrets.token_hex(20)}"
            if use_subscription is None:
                use_subscription = "Y" if str(robot.get("USE_SUBSCRIPTION") or "").upper() == "Y" else "N"
            # bizproc-event-send.md: an event can be sent only for a robot registered with
            # USE_SUBSCRIPTION Y; otherwise the automation goes on without waiting for one.
            self._event_tokens[event_token] = {"code": code, "used": False, "document_id": document_id,
                                               "document_type": document_type,
                                               "subscribed": str(use_subscription).upper() == "Y"}
            declared = robot.get("PROPERTIES") or {}
            props = {}
            for key, value in properties.items():
                ptype = str((declared.get(key) or {}).get("Type", "")).lower()
                if ptype == "user":
                    value = [f"user_{v}" if str(v).isdigit() else v for v in value] if isinstance(value, list) \
                        else (f"user_{value}" if str(value).isdigit() else value)
                props[key] = value
            form = {"workflow_id": workflow_id, "code": code,
                    "document_id": ["crm", doc_class, f"{doc_prefix}_{document_id}"],
                    "document_type": ["crm", doc_class, doc_prefix], "event_token": event_token,
                    "properties": props, "use_subscription": use_subscription, "ts": int(self.ts()),
                    "auth": self.auth_block(int(robot.get("AUTH_USER_ID") or 1), refresh=True)}
            job = {"url": robot["HANDLER"], "pairs": flatten(form), "kind": "robot", "event": code}
        if queued:
            self._enqueue(job)
        else:
            with self._pending_cv:
                self._pending += 1
            try:
                self._post_job(job)  # from the caller's thread, with its own connection
            finally:
                with self._pending_cv:
                    self._pending -= 1
                    self._pending_cv.notify_all()
        return event_token

    def robot_reply(self, event_token: str, return_values: dict, log_message: str | None) -> None:
        with self.lock:
            info = self._event_tokens.get(event_token or "")
            if info is None or info["used"] or not info.get("subscribed", True):
                raise RestError("ACCESS_DENIED", "Access denied!", 403)
            info["used"] = True
            self.robot_replies.append({"event_token": event_token, "code": info["code"],
                                       "document_type": info["document_type"],
                                       "document_id": info["document_id"],
                                       "return_values": return_values or {}, "log_message": log_message,
                                       "time": self.iso()})
