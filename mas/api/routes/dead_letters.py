"""/dead-letters: messages no agent could handle, listed, read, replayed or discarded.

They are read from the store, where every node's journal records them with the commit that
settles their delivery: one list for the whole cluster, on either transport, and listing
takes nothing off a queue. A replay sends a copy (with a new id) to the original address
through the outbox and reopens the letter's task; a second replay answers with the first.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from mas.api.auth import Claims, require
from mas.api.problems import AUTH_PROBLEMS, Problem, problems
from mas.api.schemas import DeadLetterList, DeadLetterOut, DeadLetterStatus
from mas.api.state import Gateway, gateway
from mas.errors import InvalidAddress, UnknownDeadLetter
from mas.messages import parse_address

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])

GatewayDep = Annotated[Gateway, Depends(gateway)]
LetterId = Annotated[str, Path(max_length=64, description="the dead-lettered message's id")]


@router.get("/", response_model=DeadLetterList, responses=problems(*AUTH_PROBLEMS, 422))
async def list_dead_letters(
    gw: GatewayDep,
    _: Annotated[Claims, Depends(require("dead_letters:read"))],
    status: DeadLetterStatus | None = None,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    agent_id: Annotated[str | None, Query(max_length=200)] = None,
    target: Annotated[
        str | None, Query(max_length=300, description="the address, e.g. type:echo")
    ] = None,
    task_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> DeadLetterList:
    """Dead letters of the whole cluster, newest first, filtered by what is given."""
    letters = await gw.dead_letters.list(
        status=status,
        reason=reason,
        agent_id=agent_id,
        target=target,
        task_id=task_id,
        limit=limit,
        offset=offset,
    )
    return DeadLetterList(
        items=[DeadLetterOut.of(letter) for letter in letters], limit=limit, offset=offset
    )


@router.get(
    "/{letter_id}", response_model=DeadLetterOut, responses=problems(*AUTH_PROBLEMS, 404, 422)
)
async def get_dead_letter(
    letter_id: LetterId,
    gw: GatewayDep,
    _: Annotated[Claims, Depends(require("dead_letters:read"))],
) -> DeadLetterOut:
    """One dead letter, with its message (404 when there is none with this id)."""
    letter = await gw.dead_letters.get(letter_id)
    if letter is None:
        raise UnknownDeadLetter(letter_id)
    return DeadLetterOut.of(letter)


@router.post(
    "/{letter_id}/replay",
    response_model=DeadLetterOut,
    responses=problems(*AUTH_PROBLEMS, 404, 409, 422, 503),
)
async def replay_dead_letter(
    letter_id: LetterId,
    gw: GatewayDep,
    claims: Annotated[Claims, Depends(require("dead_letters:admin"))],
) -> DeadLetterOut:
    """Send a copy of the message (a new id, `mas.replay_of` in its metadata) to its
    original address; its task, if the letter ended it, runs again.

    Replaying a replayed letter answers with the first replay and sends nothing. 409 when
    the letter was discarded, or when nobody serves its address now (the letter is kept:
    start an agent for it and replay again, or discard it).
    """
    letter = await gw.dead_letters.get(letter_id)
    if letter is not None and letter.status == "dead":
        await _check_served(gw, letter.target)
    journal = gw.journal
    replayed, sent = await gw.dead_letters.replay(
        letter_id, claims.subject, owner=journal.node_id, lease=journal.relay.lease
    )
    if sent is not None:
        journal.wake([sent])  # this node claimed the copy's outbox row: sent now
    return DeadLetterOut.of(replayed)


@router.post(
    "/{letter_id}/discard",
    response_model=DeadLetterOut,
    responses=problems(*AUTH_PROBLEMS, 404, 409, 422, 503),
)
async def discard_dead_letter(
    letter_id: LetterId,
    gw: GatewayDep,
    claims: Annotated[Claims, Depends(require("dead_letters:admin"))],
) -> DeadLetterOut:
    """Mark the letter discarded: it is kept as the record of what happened, and can no
    longer be replayed. Discarding twice is harmless; 409 when it was replayed."""
    return DeadLetterOut.of(await gw.dead_letters.discard(letter_id, claims.subject))


async def _check_served(gw: Gateway, target: str) -> None:
    """409 unless some queue serves an agent or type address (other addresses: no check)."""
    try:
        kind = parse_address(target).kind
    except InvalidAddress:
        kind = None  # recorded as it was sent; the relay's send says what is wrong
    if kind not in ("agent", "type"):
        return
    if await gw.backlogs.depth(target) is None:
        raise Problem(
            409,
            "Target Not Served",
            f"nobody serves {target} now: the dead letter is kept; start an agent for it "
            "and replay it again, or discard it",
        )
