"""``newsletter campaign schedule|plan|send|pause|resume|cancel|status|report``: the operator's controls.

Thin wrappers: every decision lives in scheduling.py, planning.py, state.py and
the sending modules. They are added to the ``campaign`` group next to validate and preview.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.cli_support import with_app

if TYPE_CHECKING:  # annotations only: importing Flask here would slow down every --help
    from flask import Flask


def _slug(path_or_slug: str) -> str:
    return Path(path_or_slug.rstrip("/")).name


def _folder(app: Flask, path_or_slug: str) -> Path:
    """A campaign folder given as a path, or as a slug under ./campaigns."""
    path = Path(path_or_slug)
    if path.is_dir():
        return path
    candidate = Path("campaigns") / path_or_slug
    if candidate.is_dir():
        return candidate
    raise click.ClickException(f"{path_or_slug}: no such campaign folder")


def _campaign_or_fail(session, path_or_slug: str):
    from newsletter.campaigns.scheduling import find

    campaign = find(session, _slug(path_or_slug))
    if campaign is None:
        raise click.ClickException(
            f"{_slug(path_or_slug)}: not scheduled (run `newsletter campaign schedule`)"
        )
    return campaign


@click.command("schedule")
@click.argument("path")
@click.option("--reschedule", is_flag=True, help="Freeze the files again after an edit (no wave started).")
@with_app
def schedule_command(app: Flask, path: str, reschedule: bool) -> None:
    """Validate, render once, and freeze the campaign with its waves."""
    from newsletter.campaigns.scheduling import ScheduleError, schedule
    from newsletter.core.db import session_scope

    runtime = app.extensions["newsletter"]
    try:
        with session_scope(runtime.sessions) as session:
            campaign = schedule(session, runtime.settings, _folder(app, path), reschedule=reschedule)
            session.commit()
            click.echo(f"{campaign.slug}: {campaign.status.value}, content {campaign.content_hash[:12]}")
            for wave in campaign.waves:
                click.echo(f"  wave {wave.name}: starts {wave.send_at:%Y-%m-%d %H:%M} UTC ({wave.audience})")
            if campaign.deadline:
                click.echo(f"  deadline: {campaign.deadline:%Y-%m-%d %H:%M} UTC")
    except ScheduleError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("plan")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@with_app
def plan_command(app: Flask, path: str, as_json: bool) -> None:
    """Per wave: audience, suppressed, sent at once, deferred and skipped (and why); reward codes
    needed against those free. Sends nothing."""
    from newsletter.campaigns.files import as_utc
    from newsletter.campaigns.frozen import FrozenCampaign
    from newsletter.campaigns.planning import PlannedWave, code_needs, plan
    from newsletter.campaigns.scheduling import find
    from newsletter.campaigns.site import retired_from_db, site_context, topics_from_db, translations_from_db
    from newsletter.campaigns.validation import validate_campaign
    from newsletter.core import clock
    from newsletter.models import CampaignStatus

    runtime = app.extensions["newsletter"]
    with runtime.sessions() as session:
        campaign = find(session, _slug(path))
        if campaign is not None and campaign.status == CampaignStatus.CANCELLED:
            if as_json:
                click.echo(json.dumps({"cancelled": True, "waves": [], "reward_codes": None}, indent=2))
                return
            click.echo(f"{campaign.slug} is cancelled: nothing will be sent (see `campaign status`)")
            return
        if campaign is not None:
            waves = [
                PlannedWave(w.name, w.audience, w.send_at) for w in campaign.waves if w.started_at is None
            ]
            topic, deadline, campaign_id = campaign.topic_slug, campaign.deadline, campaign.id
            reward = FrozenCampaign.of(campaign).reward
            pool = reward.pool if reward else None
        else:
            report = validate_campaign(
                _folder(app, path),
                site_context(
                    runtime.settings,
                    topics_from_db(session),
                    retired_from_db(session),
                    translations_from_db(session),
                ),
                clock.now(),
            )
            if not report.ok or report.campaign is None:
                raise click.ClickException("\n".join(str(p) for p in report.errors))
            source = report.campaign
            waves = [PlannedWave(w.name, w.audience, as_utc(w.send_at)) for w in source.waves]
            topic, campaign_id = source.topic, None
            reward, pool = source.reward, source.reward.pool if source.reward else None
            deadline = (
                as_utc(source.sale.public_at)
                if source.sale
                else (as_utc(source.deliver_by) if source.deliver_by else None)
            )
        plans = plan(session, runtime.settings, topic, waves, deadline, campaign_id)
        codes = code_needs(session, pool, plans, campaign_id) if reward is not None else None
    if as_json:
        # times as in `status --json`: ISO 8601, UTC
        rows = [{**p.__dict__, "send_at": p.send_at.isoformat() + "Z"} for p in plans]
        answer = {"waves": rows, "reward_codes": codes.to_json() if codes else None}
        click.echo(json.dumps(answer, indent=2))
        return
    if not plans:
        click.echo(f"{_slug(path)}: every wave has started; nothing left to plan (see `campaign status`)")
    for p in plans:
        click.echo(f"wave {p.name} at {p.send_at:%Y-%m-%d %H:%M} UTC: {p.audience} in the audience")
        click.echo(f"  {p.suppressed} suppressed, {p.now} sent at the start")
        for why, n in sorted(p.deferred.items()):
            click.echo(f"  {n} deferred ({why}), sent later before the deadline")
        for why, n in sorted(p.skipped.items()):
            click.echo(f"  {n} skipped ({why}): the deadline comes first")
    if codes is not None and (plans or codes.needed):
        if codes.pool is None:
            click.echo(f"reward codes: {codes.needed} needed, generated (no pool to run dry)")
        else:
            short = f": {codes.short} SHORT, the campaign would pause" if codes.short else ""
            free = f"{codes.available} free in pool {codes.pool}"
            click.echo(f"reward codes: {codes.needed} needed, {free}{short}")


@click.command("send")
@click.argument("path")
@click.option("--now", "now_", is_flag=True, help="Start the next waiting wave now (required).")
@with_app
def send_command(app: Flask, path: str, now_: bool) -> None:
    """Start the next waiting wave at the next tick instead of its send_at (with --now)."""
    from newsletter.campaigns.scheduling import send_now
    from newsletter.core import clock

    if not now_:
        raise click.ClickException(_send_explained(app, path))
    _control(app, path, lambda session, campaign: send_now(session, campaign, clock.now()))


def _send_explained(app: Flask, path: str) -> str:
    """What 'send --now' would do for this campaign, and how to ask for it."""
    runtime = app.extensions["newsletter"]
    with runtime.sessions() as session:
        campaign = _campaign_or_fail(session, path)
        waiting = [w for w in campaign.waves if w.status.value == "waiting"]
        if waiting:
            wave = min(waiting, key=lambda w: w.send_at)
            what = f"start wave {wave.name!r} at the next tick instead of {wave.send_at:%Y-%m-%d %H:%M} UTC"
        else:
            what = "nothing: no wave of it is waiting"
    return (
        f"nothing sent: scheduled waves start by themselves at their send_at; 'send --now' would {what}. "
        f"Run: newsletter campaign send {path} --now"
    )


@click.command("pause")
@click.argument("path")
@with_app
def pause_command(app: Flask, path: str) -> None:
    """Stop sending; workers stop at their next message and hand their rows back."""
    from newsletter.campaigns.scheduling import pause

    _control(app, path, pause)


@click.command("resume")
@click.argument("path")
@with_app
def resume_command(app: Flask, path: str) -> None:
    """Carry on from the delivery ledger (after a pause, or after Redis lost its queue)."""
    from newsletter.campaigns.jobs import tick
    from newsletter.campaigns.scheduling import resume

    _control(app, path, resume)
    done = tick()
    if "skipped" not in done:
        taken_back = done["recovered"]["requeued"]
        click.echo(f"{done['batches']} batches enqueued; {taken_back} rows taken back from dead workers")


@click.command("cancel")
@click.argument("path")
@with_app
def cancel_command(app: Flask, path: str) -> None:
    """Stop for good: queued and deferred rows are skipped with the reason."""
    from newsletter.campaigns.scheduling import cancel

    _control(app, path, cancel)


def _control(app: Flask, path: str, action) -> None:
    from newsletter.core.db import session_scope

    runtime = app.extensions["newsletter"]
    with session_scope(runtime.sessions) as session:
        result = action(session, _campaign_or_fail(session, path))
        session.commit()
    if not result.ok:
        raise click.ClickException(result.message)
    click.echo(result.message)


@click.command("status")
@click.argument("path")
@click.option("--follow", is_flag=True, help="Show a progress bar until the campaign is done.")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Seconds between refreshes with --follow.",
)
@with_app
def status_command(app: Flask, path: str, follow: bool, as_json: bool, interval: float) -> None:
    """Counts per state per wave (and early-access redemptions)."""
    from newsletter.campaigns.scheduling import progress

    runtime = app.extensions["newsletter"]

    def read() -> dict:
        with runtime.sessions() as session:
            return progress(session, _campaign_or_fail(session, path))

    data = read()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not follow:
        _print_status(data)
        return
    # one line per change; on a terminal it is redrawn in place, in a pipe each change is a plain line
    redraw = sys.stderr.isatty() and sys.stdout.isatty()
    shown = ""
    while True:
        line = _progress_line(data)
        if line != shown:
            click.echo(f"\r\x1b[K{line}" if redraw else line, err=True, nl=not redraw)
            shown = line
        if data["status"] in ("done", "cancelled", "paused"):
            break
        time.sleep(interval)
        data = read()
    if redraw:
        click.echo("", err=True)
    _print_status(data)


def _wave_progress(name: str, wave: dict) -> str:
    """``vip 120/500 (24%)``; a waiting wave says when it starts (it never counts as done)."""
    if wave["status"] == "waiting":
        return f"{name} waiting (starts {wave['send_at']})"
    from newsletter.campaigns.scheduling import wave_progress

    done, total = wave_progress(wave)
    if wave["status"] != "done" and not total:
        return f"{name} starting"
    # floor, so that 999 of 1000 shows 99%, never 100% before the last row
    percent = 100 * done // total if total else 100
    return f"{name} {done}/{total} ({percent}%)"


def _progress_line(data: dict) -> str:
    waves = " | ".join(_wave_progress(name, wave) for name, wave in data["waves"].items())
    return f"{data['campaign']}: {data['status']} | {waves}"


def _print_status(data: dict) -> None:
    line = f"{data['campaign']}: {data['status']}"
    if data.get("pause_reason"):
        line += f" ({data['pause_reason']})"
    click.echo(line)
    for name, wave in data["waves"].items():
        states = ", ".join(f"{n} {s}" for s, n in sorted(wave["states"].items())) or "nobody yet"
        extra = f", {wave['redemptions']} early-access redemptions" if wave.get("redemptions") else ""
        click.echo(f"  wave {name} ({wave['status']}, starts {wave['send_at']}): {states}{extra}")
        for reason, n in sorted(wave.get("reasons", {}).items()):
            click.echo(f"    {n} {reason}")


@click.command("report")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
@with_app
def report_command(app: Flask, path: str, as_json: bool) -> None:
    """Per wave and in total: delivered, deferred, skipped, bounces, complaints, clicks and rates."""
    from newsletter.campaigns.report import report

    runtime = app.extensions["newsletter"]
    with runtime.sessions() as session:
        numbers = report(session, runtime.settings, _campaign_or_fail(session, path))
    if as_json:
        click.echo(json.dumps(numbers.to_json(), indent=2))
        return
    for line in _report_lines(numbers):
        click.echo(line)


def _report_lines(numbers) -> list[str]:
    """The report as a table: one column per wave and the total (the cells come from report.table)."""
    from newsletter.campaigns.report import table

    shown = table(numbers)
    width = max(len(label) for label, _ in shown.rows)
    sizes = [max(len(h), *(len(values[i]) for _, values in shown.rows)) for i, h in enumerate(shown.heads)]
    lines = [
        shown.title,
        "  ".join([" " * width, *(h.rjust(s) for h, s in zip(shown.heads, sizes, strict=True))]),
    ]
    for label, values in shown.rows:
        lines.append(
            "  ".join([label.ljust(width), *(v.rjust(s) for v, s in zip(values, sizes, strict=True))])
        )
    return lines + shown.notes


COMMANDS = [
    schedule_command,
    plan_command,
    send_command,
    pause_command,
    resume_command,
    cancel_command,
    status_command,
    report_command,
]
