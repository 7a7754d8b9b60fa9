"""The devportal's human pages: the CRM lists, the app in an iframe, placements, and the BX24.js shim."""
from __future__ import annotations

import json
from importlib import resources

from markupsafe import escape
from werkzeug.wrappers import Request, Response

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#eef2f4;color:#333}
header{background:#2fc6f6;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:16px 20px}
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:20px}
th,td{border-bottom:1px solid #e5e8ea;padding:6px 8px;text-align:left}
th{background:#f5f7f8;font-weight:600}
.status{display:inline-block;padding:1px 8px;border-radius:10px;background:#e0f3fd}
iframe{width:100%;border:0;background:#fff;min-height:400px}
.muted{color:#888}
.pager a{margin-right:10px}
.slider{position:fixed;top:0;right:0;bottom:0;width:min(1000px,92vw);background:#eef2f4;
  box-shadow:-4px 0 20px rgba(0,0,0,.25);z-index:1000}
.slider iframe{width:100%;height:100%;min-height:0}
.slider-close{position:absolute;left:-40px;top:14px;width:32px;height:32px;border:0;border-radius:16px;
  background:#535c69;color:#fff;font-size:20px;cursor:pointer}
"""

_HOST_JS = """
(function(){
  var frame = document.getElementById('app-frame');
  var ctx = JSON.parse(document.getElementById('bx24-context').textContent);
  window.addEventListener('message', function(event){
    var msg = event.data || {};
    if (msg.nz !== 'bx24' || event.source !== frame.contentWindow) { return; }
    var reply = function(result){ event.source.postMessage({nz:'bx24-reply', id: msg.id, result: result}, '*'); };
    if (msg.cmd === 'init') { reply(ctx); }
    else if (msg.cmd === 'resize') {
      if (msg.args.height > 0) { frame.style.height = msg.args.height + 'px'; }
      if (msg.args.width) { frame.style.width = msg.args.width === '100%' ? '100%' : msg.args.width + 'px'; }
      reply(true);
    }
    else if (msg.cmd === 'setScroll') {
      if (msg.args.scroll >= 0) { window.scrollTo(window.scrollX, msg.args.scroll); }
      reply(true);
    }
    else if (msg.cmd === 'openPath') {
      // A path of this portal only (starts with one '/'), opened in a slider over the page.
      var path = msg.args.path || '';
      if (path.charAt(0) !== '/' || path.charAt(1) === '/') {
        reply({result: 'error', errorCode: 'PATH_NOT_AVAILABLE'});
        return;
      }
      var slider = document.getElementById('bx-slider');
      if (slider) { slider.remove(); }
      slider = document.createElement('div');
      slider.id = 'bx-slider';
      slider.className = 'slider';
      var close = document.createElement('button');
      close.type = 'button';
      close.className = 'slider-close';
      close.textContent = '×';
      close.title = 'Закрыть';
      var inner = document.createElement('iframe');
      inner.id = 'bx-slider-frame';
      inner.src = path + (path.indexOf('?') < 0 ? '?' : '&') + 'IFRAME=Y&from=rest_placement&from_app=' +
        encodeURIComponent(ctx.client_id || '') + '&user=' + encodeURIComponent(ctx.user_id);
      close.addEventListener('click', function(){ slider.remove(); reply({result: 'close'}); });
      slider.appendChild(close);
      slider.appendChild(inner);
      document.body.appendChild(slider);
    }
    else if (msg.cmd === 'installFinish') {
      fetch('/_dev/install-finish', {method:'POST', headers:{'Content-Type':'application/json'}, body:'{}'})
        .then(function(){ document.body.setAttribute('data-install-finished', '1'); reply(true); });
    }
    else if (msg.cmd === 'refreshAuth') {
      fetch('/_dev/issue-tokens', {method:'POST', headers:{'Content-Type':'application/json'},
                                   body: JSON.stringify({user_id: ctx.user_id})})
        .then(function(r){ return r.json(); })
        .then(function(body){
          ctx.auth.access_token = body.result.access_token;
          ctx.auth.refresh_token = body.result.refresh_token;
          reply(ctx.auth);
        });
    }
    else if (msg.cmd === 'reload') { window.location.reload(); }
    else { reply(true); }
  });
  document.getElementById('app-form').submit();
})();
"""


def _page(title: str, body: str, status: int = 200) -> Response:
    html = (f"<!doctype html><html lang='ru'><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<link rel='icon' href='data:,'><style>{_STYLE}</style></head><body><header><a href='/'>Битрикс24 · devportal</a>"
            f"<a href='/'>CRM</a><a href='/app'>Приложение</a></header><main>{body}</main></body></html>")
    response = Response(html, status=status, content_type="text/html; charset=utf-8")
    return response


def handle_page(portal, request: Request) -> Response:
    path = request.path
    if path == "/bx24.js":
        source = resources.files("devportal").joinpath("static/bx24.js").read_text(encoding="utf-8")
        return Response(source, content_type="application/javascript; charset=utf-8",
                        headers={"Access-Control-Allow-Origin": "*"})
    if path == "/":
        return _home(portal, request)
    if path in ("/app", "/app/"):
        return _app_frame(portal, request, install=False)
    if path in ("/app/install", "/app/install/"):
        return _app_frame(portal, request, install=True)
    parts = [p for p in path.split("/") if p]
    if len(parts) in (3, 4) and parts[0] == "crm" and parts[1] in ("deal", "lead") and parts[2] == "automation":
        return _automation(portal, parts[1])
    if len(parts) == 4 and parts[0] == "crm" and parts[1] in ("contact", "company") and parts[2] == "details":
        return _details(portal, request, parts[1], parts[3])
    return _page("Не найдено", "<p>Страница не найдена.</p>", 404)


def _when(stamp: str | None) -> str:
    """ISO stamp as a person reads it on a Russian portal: 23.11.2026 09:41."""
    if not stamp:
        return ""
    return f"{stamp[8:10]}.{stamp[5:7]}.{stamp[0:4]} {stamp[11:16]}"


def _user_id(request: Request) -> int:
    try:
        return int(request.args.get("user", 1))
    except ValueError:
        return 1


def _enum_columns(portal, entity: str) -> list[dict]:
    return [d for d in portal.userfields[entity].values() if d["USER_TYPE_ID"] == "enumeration"]


def _home(portal, request: Request) -> Response:
    try:
        page = max(0, int(request.args.get("page", 0)))
    except ValueError:
        page = 0
    blocks = []
    with portal.lock:
        app = portal.app
        blocks.append(f"<p class='muted'>{escape(portal.domain)} · member_id {escape(portal.member_id)} · "
                      f"{escape(_when(portal.iso()))} · приложение: "
                      f"{escape(app['client_id']) + (' (установлено)' if app['installed'] else ' (не завершена установка)') if app else 'не установлено'}</p>")
        for entity, title in (("contact", "Контакты"), ("company", "Компании")):
            enums = _enum_columns(portal, entity)
            records = list(portal.records[entity].values())
            total = len(records)
            rows = records[page * 50:(page + 1) * 50]
            head = "".join(f"<th>{escape(d['LIST_COLUMN_LABEL'])}</th>" for d in enums)
            lines = []
            for r in rows:
                name = r.get("TITLE") if entity == "company" else \
                    " ".join(x for x in (r.get("NAME"), r.get("LAST_NAME")) if x)
                phone = ", ".join(e["VALUE"] for e in r.get("PHONE") or [])
                owner = portal.users.get(int(r.get("ASSIGNED_BY_ID") or 0), {})
                cells = "".join(
                    f"<td><span class='status'>{escape(portal.status_name(entity, r, d['FIELD_NAME']) or '—')}"
                    f"</span></td>" for d in enums)
                lines.append(f"<tr><td>{r['ID']}</td><td><a href='/crm/{entity}/details/{r['ID']}/'>"
                             f"{escape(name or '—')}</a></td><td>{escape(phone)}</td>"
                             f"<td>{escape(owner.get('NAME', ''))} {escape(owner.get('LAST_NAME', ''))}</td>"
                             f"<td>{escape(_when(r.get('DATE_MODIFY')))}</td>{cells}</tr>")
            blocks.append(f"<h2>{title} <span class='muted'>({total})</span></h2><table><tr><th>ID</th>"
                          f"<th>Название</th><th>Телефон</th><th>Ответственный</th><th>Изменён</th>{head}</tr>"
                          f"{''.join(lines)}</table>")
    back = f"<a href='/?page={page - 1}'>← назад</a>" if page else ""
    pager = f"<p class='pager'>{back}<a href='/?page={page + 1}'>дальше →</a></p>"
    return _page("CRM", "".join(blocks) + pager)


def _frame(portal, request: Request, url: str, placement: str, options: dict, title: str) -> str:
    user_id = _user_id(request)
    tokens = portal.issue_tokens(user_id)
    query = portal.page_query(request.args.get("lang", "ru"))
    form = portal.page_form(tokens, placement, options)
    action = url + ("&" if "?" in url else "?") + "&".join(f"{k}={escape(v)}" for k, v in query.items())
    inputs = "".join(f"<input type='hidden' name='{escape(k)}' value='{escape(v)}'>" for k, v in form.items())
    context = {"auth": {"access_token": tokens["access_token"], "refresh_token": tokens["refresh_token"],
                        "expires_in": portal.token_ttl, "domain": portal.domain, "member_id": portal.member_id},
               "placement": {"placement": placement, "options": options}, "lang": query["LANG"],
               "isAdmin": portal.is_admin(user_id), "user_id": user_id,
               "client_id": portal.app["client_id"] if portal.app else ""}
    context_json = json.dumps(context, ensure_ascii=False).replace("</", "<\\/")
    return (f"<h2>{escape(title)}</h2><form id='app-form' method='post' action='{action}' target='app-frame'>"
            f"{inputs}</form><iframe id='app-frame' name='app-frame'></iframe>"
            f"<script type='application/json' id='bx24-context'>{context_json}</script>"
            f"<script>{_HOST_JS}</script>")


def _app_frame(portal, request: Request, install: bool) -> Response:
    with portal.lock:
        app = portal.app
        if app is None:
            return _page("Приложение", "<p>Приложение не установлено.</p>", 404)
        if install:
            url, title = app["app_url"] + app["install_path"], "Установка приложения"
        else:
            url, title = app["app_url"] + app.get("page_path", "/app"), app["client_id"]
    return _page(title, _frame(portal, request, url, "DEFAULT", {}, title))


def _automation(portal, entity: str) -> Response:
    """A pipeline's automation rules page (/crm/deal/automation/<pipeline>/): the robots an app
    registered for this document type, as the portal offers them in «Добавить робота»."""
    document = {"deal": "CCrmDocumentDeal", "lead": "CCrmDocumentLead"}[entity]
    with portal.lock:
        robots = [r for r in portal.robots.values() if document in (r.get("DOCUMENT_TYPE") or [])]
        items = "".join(f"<tr><td>{escape(_name(r['NAME']))}</td><td class='muted'>{escape(r['CODE'])}</td></tr>"
                        for r in robots)
    title = "Роботы сделок" if entity == "deal" else "Роботы лидов"
    return _page(title, f"<h1>{title}</h1><p class='muted'>Добавить робота → Приложения</p>"
                        f"<table id='robots'><tr><th>Робот</th><th>Код</th></tr>{items}</table>")


def _name(value) -> str:
    """A robot's NAME: a string or {language: text}."""
    if isinstance(value, dict):
        return str(value.get("ru") or next(iter(value.values()), ""))
    return str(value or "")


def _details(portal, request: Request, entity: str, rid: str) -> Response:
    with portal.lock:
        record = portal.records[entity].get(int(rid)) if rid.isdigit() else None
        if record is None:
            return _page("Не найдено", "<p>Запись не найдена.</p>", 404)
        code = f"CRM_{entity.upper()}_DETAIL_TAB"
        tabs = [p for p in portal.placements if p["placement"] == code] if portal.app and \
            portal.app["installed"] else []
        name = record.get("TITLE") or " ".join(x for x in (record.get("NAME"), record.get("LAST_NAME")) if x)
        fields = "".join(f"<tr><th>{escape(d['EDIT_FORM_LABEL'])}</th><td>"
                         f"{escape(portal.status_name(entity, record, d['FIELD_NAME']) or '—')}</td></tr>"
                         for d in _enum_columns(portal, entity))
        phones = ", ".join(e["VALUE"] for e in record.get("PHONE") or [])
        body = (f"<h1>{escape(name or '—')}</h1><table><tr><th>ID</th><td>{record['ID']}</td></tr>"
                f"<tr><th>Телефон</th><td>{escape(phones)}</td></tr>"
                f"<tr><th>Изменён</th><td>{escape(_when(record.get('DATE_MODIFY')))}</td></tr>{fields}</table>")
    if tabs:
        tab = tabs[0]
        body += _frame(portal, request, tab["handler"], code, {"ID": str(rid)}, tab["title"] or code)
    return _page(name or "CRM", body)
