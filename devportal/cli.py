"""`nezabyt devportal`: run a local Bitrix24 portal in the foreground."""
from __future__ import annotations

import click

SEEDS = {"none": None, "small": {"departments": 3, "managers": 12, "contacts": 300, "companies": 60},
         "company": {"departments": 4, "managers": 24, "contacts": 12000, "companies": 2000}}


@click.command("devportal")
@click.option("--port", default=8700, show_default=True, type=int)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--seed", "seed_name", type=click.Choice(sorted(SEEDS)), default="small", show_default=True)
@click.option("--rps", default=2.0, show_default=True, type=float, help="leaky-bucket drain per second")
@click.option("--burst", default=50, show_default=True, type=int, help="leaky-bucket size")
@click.option("--no-limits", is_flag=True, help="turn the rate and operating-time limits off")
@click.option("--token-ttl", default=3600, show_default=True, type=int, help="access token lifetime, seconds")
@click.option("--tz", default="Europe/Moscow", show_default=True, help="the portal's time zone")
@click.option("--operating-limit", default=480.0, show_default=True, type=float,
              help="seconds of method time per 10 minutes")
@click.option("--member-id", default=None, help="fixed member_id (random by default)")
def devportal_command(port, host, seed_name, rps, burst, no_limits, token_ttl, tz, operating_limit, member_id):
    """Run the devportal: REST at /rest/, the authorization server at /auth/ (/auth/oauth/token/,
    /auth/rest/app.info), control API at /_dev/, pages at /."""
    from devportal.server import DevPortalServer

    server = DevPortalServer(rps=rps, burst=burst, limits=not no_limits, token_ttl=token_ttl, tz=tz,
                             operating_limit=operating_limit, member_id=member_id, port=port, host=host)
    if SEEDS[seed_name]:
        summary = server.portal.seed(**SEEDS[seed_name])
        click.echo(f"seeded: {summary['contacts']} contacts, {summary['companies']} companies, "
                   f"{summary['calls']} calls, {summary['managers']} managers")
    server.bind()
    click.echo(f"devportal on {server.url} (member_id {server.portal.member_id}); "
               f"limits {'off' if no_limits else f'{rps}/s burst {burst}'}")
    # The app against this portal: a development run that refreshes tokens at the devportal's own
    # authorization server and accepts its private, plain-http address.
    click.echo(f"run the app against it with: NEZABYT_ENV=development NEZABYT_ALLOW_PRIVATE_PORTALS=1 "
               f"NEZABYT_OAUTH_URL={server.oauth_url}")
    server.serve_forever()
