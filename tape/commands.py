"""The tape's own commands: import, export, info, rebuild, snapshot. Thin over the library."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tape.cli import claim_tape, output_tape_options
from tape.har import har_items, is_har
from tape.info import render_info, tape_info
from tape.jsonl import JsonlReader, write_jsonl
from tape.outputs import claim_output, overwrite_option
from tape.privacy import Privacy, privacy_options
from tape.projection import rebuild
from tape.reader import TapeReader
from tape.schema import (
    TapeError,
    finalize,
    install_views,
    open_for_reading,
    open_for_writing,
)
from tape.snapshot import snapshot
from tape.source import readable
from tape.tapeio import import_items
from tape.tapeset import named_tapes


@click.command("import")
@click.argument("source", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@output_tape_options
@privacy_options
def import_command(
    source: Path, output: Path, append: bool, overwrite: bool, privacy: Privacy
) -> None:
    """Import a JSONL tape, or a browser's HAR file (.har), into a DuckDB tape.

    The whole file is checked first, so a bad line or entry imports nothing. A HAR becomes one
    session: Bayeux POSTs and WebSocket messages as Bayeux frames, other calls as HTTP frames.
    """
    if is_har(source):
        items = har_items(source)
        claim_tape(output, append=append, overwrite=overwrite)
        frames, sessions = import_items(items, output, privacy=privacy)
        click.echo(f"imported {frames} frames in {sessions} sessions into {output} (from HAR)")
        return
    reader = JsonlReader(source)
    for _ in reader.items():  # validation pass: errors name the line
        pass
    claim_tape(output, append=append, overwrite=overwrite)  # after: a bad file replaces nothing
    frames, sessions = import_items(reader.items(), output, privacy=privacy)
    click.echo(f"imported {frames} frames in {sessions} sessions into {output}")


@click.command("export")
@click.argument("tape", type=click.Path(path_type=Path), callback=named_tapes)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default=Path("-"),
    show_default=True,
    help="JSONL file to write, or - for stdout.",
)
@overwrite_option
@click.option("--session", "session_id", help="Export only this session.")
def export_command(tape: Path, output: Path, overwrite: bool, session_id: str | None) -> None:
    """Export a tape as JSONL, byte for byte (one frame per line)."""
    to_stdout = str(output) == "-"
    if not to_stdout:
        claim_output(output, overwrite=overwrite)
    with readable(tape) as db, TapeReader(db) as reader:
        sessions = [s for s in reader.sessions() if session_id in (None, s.session_id)]
        if session_id is not None and not sessions:
            raise TapeError(f"{tape} has no session {session_id!r}; see `cometd-tape info`")
        frames = reader.frames(session_id)
        if to_stdout:
            count = write_jsonl(sys.stdout.buffer, sessions, frames)
        else:
            with open(output, "wb") as stream:
                count = write_jsonl(stream, sessions, frames)
            click.echo(f"exported {count} frames to {output}", err=True)


@click.command("info")
@click.argument("tape", type=click.Path(path_type=Path), callback=named_tapes)
def info_command(tape: Path) -> None:
    """Show a tape's sessions, frames and messages per channel, time span and schema.

    TAPE is a DuckDB tape, a JSONL tape or a HAR file."""
    with readable(tape) as db, TapeReader(db) as reader:
        click.echo(render_info(tape_info(reader.conn), tape))


@click.command("rebuild")
@click.argument("tape", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def rebuild_command(tape: Path) -> None:
    """Derive the messages and http_fields projections again from the frames (the log is the
    truth), migrate an older tape to the current schema, (re)install the analysis views and
    store request -> ack latency again."""
    open_for_reading(tape).close()  # refuse anything that is not already a tape
    conn = open_for_writing(tape)
    try:
        count = rebuild(conn)
        install_views(conn)
        finalize(conn)
        http_count = int(conn.execute("SELECT count(*) FROM http_fields").fetchall()[0][0])
    finally:
        conn.close()
    click.echo(
        f"rebuilt messages: {count} rows, http_fields: {http_count} rows, from the frames of {tape}"
    )


@click.command("snapshot")
@click.argument("live", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("copy", type=click.Path(dir_okay=False, path_type=Path))
@overwrite_option
def snapshot_command(live: Path, copy: Path, overwrite: bool) -> None:
    """Copy a tape that a recorder or proxy is still writing, to analyse the copy.

    DuckDB opens no tape another process writes, and a plain cp misses the frames still in
    the tape's .wal. COPY holds every frame committed when it was taken, in one file."""
    claim_output(copy, overwrite=overwrite, option="COPY", tape=True)
    frames, sessions = snapshot(live, copy)
    click.echo(f"copied {frames} frames in {sessions} sessions from {live} to {copy}")
