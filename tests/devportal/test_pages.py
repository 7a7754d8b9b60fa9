"""The portal pages a person opens: CRM lists with the status by name, the app and placements in iframes,
and the BX24.js shim (driven in headless Chromium when it is available)."""
from __future__ import annotations

import json
import re
import threading
from html import unescape

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.devportal.conftest import rest


def _hidden_inputs(html: str) -> dict:
    return {unescape(k): unescape(v) for k, v in re.findall(r"<input type='hidden' name='([^']*)' value='([^']*)'>",
                                                            html)}


def test_home_lists_contacts_with_status_name(installed):
    srv, answer, _ = installed
    token = answer["access_token"]
    rest(srv, "crm.contact.userfield.add", token, fields={
        "FIELD_NAME": "NEZABYT_STATUS", "USER_TYPE_ID": "enumeration", "LABEL": "Статус клиента",
        "LIST": [{"VALUE": "Горячий", "XML_ID": "HOT"}]})
    hot = srv.portal.userfields["contact"]["UF_CRM_NEZABYT_STATUS"]["LIST"][0]["ID"]
    srv.portal.act_add("contact", {"NAME": "Вера", "LAST_NAME": "Ланская", "UF_CRM_NEZABYT_STATUS": hot})
    html = requests.get(f"{srv.url}/").text
    assert "Статус клиента" in html and "Вера Ланская" in html and "Горячий" in html


# doc: api-reference/widgets/_includes/widget_data.md ; api-reference/widgets/crm/detail-tab.md
def test_app_and_detail_tab_frames_post_the_page_form(installed):
    srv, answer, peer = installed
    token = answer["access_token"]
    rest(srv, "placement.bind", token, PLACEMENT="CRM_CONTACT_DETAIL_TAB", HANDLER=f"{peer.url}/placement/tab",
         TITLE="Незабыт")
    manager = srv.portal.add_user("Игорь", "Продавцов")
    html = requests.get(f"{srv.url}/app", params={"user": manager}).text
    action = unescape(re.search(r"action='([^']*)' target='app-frame'", html).group(1))
    assert action.startswith(f"{peer.url}/app?DOMAIN={srv.domain}&PROTOCOL=0&LANG=ru&APP_SID=")
    form = _hidden_inputs(html)
    assert form["PLACEMENT"] == "DEFAULT" and form["member_id"] == srv.portal.member_id
    assert rest(srv, "user.current", form["AUTH_ID"]).json()["result"]["ID"] == str(manager)
    cid = srv.portal.act_add("contact", {"NAME": "Карточка"})
    card = requests.get(f"{srv.url}/crm/contact/details/{cid}/").text
    tab = _hidden_inputs(card)
    assert tab["PLACEMENT"] == "CRM_CONTACT_DETAIL_TAB" and json.loads(tab["PLACEMENT_OPTIONS"]) == {"ID": str(cid)}
    assert f"{peer.url}/placement/tab?DOMAIN=" in unescape(card)
    shim = requests.get(f"{srv.url}/bx24.js")
    assert shim.headers["Content-Type"].startswith("application/javascript")
    for name in ("init", "getAuth", "callMethod", "callBatch", "fitWindow", "installFinish", "refreshAuth"):
        assert f"{name}:" in shim.text
    pre = requests.options(f"{srv.url}/rest/user.current")
    assert pre.status_code == 204 and pre.headers["Access-Control-Allow-Origin"] == "*"


APP_PAGE = """<!doctype html><html><body><div id='out'>wait</div>
<script src='http://{domain}/bx24.js'></script>
<script>
BX24.init(function () {{
  BX24.callMethod('user.current', {{}}, function (r) {{
    var auth = BX24.getAuth();
    BX24.callBatch({{a: ['app.info', {{}}], b: ['crm.contact.get', {{id: 999}}]}}, function (res) {{
      document.getElementById('out').textContent = [r.data().NAME, auth.member_id, res.a.data().ID,
        res.b.error().ex.error_description, BX24.placement.info().placement].join('|');
      document.body.style.height = '900px';
      BX24.fitWindow();
      if ({install}) {{ BX24.installFinish(); }}
    }});
  }});
}});
</script></body></html>"""


@pytest.mark.browser
def test_bx24_shim_in_headless_chromium(fast_portal, browser):
    def app(environ, start_response):
        request = Request(environ)
        html = APP_PAGE.format(domain=request.args["DOMAIN"], install="true" if request.path == "/install" else
                               "false")
        return Response(html, content_type="text/html")(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    portal = fast_portal.portal
    try:
        portal.register_app(f"http://127.0.0.1:{server.server_port}", "local.ui", "s", installed=False)
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(f"{fast_portal.url}/app/install")
            page.wait_for_selector("body[data-install-finished='1']", timeout=10_000)
            assert portal.app["installed"] is True
            frame = page.frame(name="app-frame")
            frame.wait_for_function("document.getElementById('out').textContent !== 'wait'", timeout=10_000)
            text = frame.inner_text("#out")
            assert text == f"Админ|{portal.member_id}|{portal.app['id']}|Not found|DEFAULT"
            page.wait_for_function("parseInt(document.getElementById('app-frame').style.height) >= 900",
                                   timeout=10_000)  # fitWindow resized the frame to its content
        finally:
            context.close()
    finally:
        server.shutdown()
        server.server_close()
