"""The installer page the admin sees in the portal's frame (what was set up, what to do next; it
finishes the install with BX24.installFinish) and the page of a failed install, in Russian."""
from __future__ import annotations

import html

from install.claim import InstallOutcome


def bx24_script_url(domain: str) -> str:
    """The devportal serves its BX24.js shim itself; real portals load Bitrix24's."""
    host = domain.split(":")[0]
    if host in ("127.0.0.1", "localhost") or host.endswith(".localhost") or host.endswith(".test"):
        return f"//{domain}/bx24.js"
    return "//api.bitrix24.com/api/v1/"


_PAGE_STYLE = """
body { margin: 0; padding: 24px 16px; background: #eef2f4; color: #525c69;
  font: 14px/1.5 "Open Sans", "Helvetica Neue", Arial, sans-serif; }
.card { max-width: 720px; margin: 0 auto; background: #fff; border-radius: 12px; padding: 22px 24px; }
h1 { font-size: 22px; font-weight: 400; margin: 0 0 8px; color: #333; }
h2 { font-size: 15px; font-weight: 600; margin: 18px 0 6px; }
ul, ol { margin: 6px 0; padding-left: 22px; } li { margin: 3px 0; }
.ok { color: #5c8a00; } .fail { color: #d0312d; }
.muted { color: #80868e; font-size: 12px; }
.btn { display: inline-block; border: 0; border-radius: 18px; padding: 8px 20px; margin-top: 14px;
  font-family: inherit; font-size: 12px; font-weight: 600; line-height: 1.5; text-transform: uppercase;
  color: #535c69; background: #bbed21; cursor: pointer; text-decoration: none; }
"""


def _page(title: str, body: str, script: str = "", head: str = "") -> str:
    return f"""<!doctype html>
<html lang="ru"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>{head}<style>{_PAGE_STYLE}</style></head>
<body><div class="card">{body}</div>{script}</body></html>
"""


def installer_page(domain: str, public_url: str, outcome: InstallOutcome) -> str:
    """What the admin sees on the installer page: what was set up and what to do next. The page
    finishes the install itself (BX24.installFinish), after which the portal opens the app."""
    script = html.escape(bx24_script_url(domain), quote=True)
    report = outcome.manifest
    done = ["поле «Статус клиента» и причина закрытия в контактах и компаниях",
            "вкладка «Не забыт» в карточках контакта и компании",
            "обработчики событий CRM: каждое изменение и каждый звонок доходят до приложения",
            "роботы для лидов и сделок в разделе «Роботы»"]
    robots = len(getattr(report, "robots_added", []) or []) + len(getattr(report, "robots_updated", []) or [])
    if robots:
        done[3] += f" (зарегистрировано: {robots})"
    items = "".join(f"<li>{html.escape(line)}</li>" for line in done)
    title = "«Не забыт» установлен" if outcome.created else "«Не забыт» готов к работе"
    body = f"""<h1 class="ok">{title}</h1>
<p>Приложение подключено к порталу {html.escape(domain.split(":")[0])}. Настроено:</p>
<ul>{items}</ul>
<h2>Что дальше</h2>
<ol>
<li>Откройте «Не забыт» в меню приложений слева — сейчас он откроется сам.</li>
<li>На вкладке «Настройки», в разделе «Статусы и сроки», проверьте, сколько дней клиент может оставаться в каждом статусе без звонка.</li>
<li>Там же, в разделах «Когда клиент пропал» и «Уведомления», выберите, кому передавать потерянных клиентов и в какое время присылать ежедневную сводку.</li>
<li>Уже есть статусы в таблице? Загрузите их на вкладке «Загрузка статусов».</li>
<li>Менеджерам ничего делать не нужно: они работают как обычно, статус меняется после звонка.</li>
</ol>
<p class="muted">Настройки и данные сохраняются при обновлении и переустановке приложения.</p>
<button class="btn" type="button" id="finish">Открыть настройки</button>"""
    finish = f"""<script src="{script}"></script>
<script>
function nezabytFinish() {{ if (window.BX24) {{ BX24.installFinish(); }} }}
document.getElementById('finish').addEventListener('click', nezabytFinish);
if (window.BX24) {{ BX24.init(nezabytFinish); }}
</script>"""
    return _page("«Не забыт» — установка", body, finish)


# What the admin reads when the installer page fails, by the status the install answered.
_FAILURE_TEXT = {
    400: ("Портал прислал неполные данные установки.",
          "Откройте приложение из меню портала ещё раз; если не поможет — переустановите его из раздела «Приложения»."),
    401: ("Портал не подтвердил установку.",
          "Откройте приложение из меню портала ещё раз: ссылка установки действует недолго."),
    403: ("Установить приложение может только администратор портала.",
          "Попросите администратора открыть «Не забыт» в разделе «Приложения»."),
    502: ("Битрикс24 отказал в настройке приложения.",
          "Ничего не сохранено. Переустановите приложение; если ошибка повторится, передайте её текст в поддержку."),
    503: ("Битрикс24 сейчас занят.",
          "Ничего не изменено. Попробуйте установить ещё раз через минуту."),
}


def install_failure_page(status: int, message: str) -> str:
    """The installer page's answer when the install failed: what happened, in Russian, what to do,
    and the technical reason for support."""
    head, advice = _FAILURE_TEXT.get(status, _FAILURE_TEXT[502] if status >= 500 else _FAILURE_TEXT[400])
    body = f"""<h1 class="fail">«Не забыт» не установлен</h1>
<p>{html.escape(head)}</p>
<p>{html.escape(advice)}</p>
<p class="muted">Для поддержки: {status} — {html.escape(message)}</p>"""
    return _page("«Не забыт» — установка не удалась", body)
