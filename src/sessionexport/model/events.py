"""RUM events: the pieces a session is assembled from (``POST /api/v2/rum/events``, NDJSON).

Every event names its session (``tenantId``, ``sessionId``), has an ``eventId`` unique within the
session (a re-sent event is a duplicate) and a ``timestamp`` (epoch ms, when it happened). Its
``type`` says what it carries:

    attributes  who and where: user, device, browser, geo, application type ... (UserSession fields)
    action      a user action (a ``userActions[]`` item: name, type, startTime, endTime, metrics ...)
    event       a ``events[]`` item (RageClick, RageTap, UserTag, PageChange ...)
    error       an ``errors[]`` item (Error, Crash ...)
    end         the session was ended explicitly (endSession(), app closed, synthetic run over)

Events may arrive in any order, late or twice; the sessionizer decides when a session is
complete and computes the rest (times, counts, bounce, apdex, user experience score).
"""

from __future__ import annotations

from typing import Any

import msgspec

from sessionexport.model.session import EpochMillis, Identifier, SessionError, SessionEvent, UserAction

# Session fields the sessionizer computes: an event may not set them.
COMPUTED_FIELDS = frozenset(
    {
        "tenantId",
        "userSessionId",
        "startTime",
        "endTime",
        "duration",
        "bounce",
        "userActionCount",
        "totalErrorCount",
        "hasError",
        "hasCrash",
        "numberOfRageClicks",
        "numberOfRageTaps",
        "userExperienceScore",
        "endReason",
        "partNumber",
        "userActions",
        "events",
        "errors",
    }
)


class _Event(msgspec.Struct, kw_only=True, tag_field="type", gc=False):
    tenantId: Identifier
    sessionId: Identifier
    eventId: Identifier
    timestamp: EpochMillis

    @property
    def key(self) -> tuple[str, str]:
        return (self.tenantId, self.sessionId)


class AttributesEvent(_Event, tag="attributes"):
    attributes: dict[str, Any]


class ActionEvent(_Event, tag="action"):
    action: UserAction


class SessionEventEvent(_Event, tag="event"):
    event: SessionEvent


class ErrorEvent(_Event, tag="error"):
    error: SessionError


class EndEvent(_Event, tag="end"):
    pass


RumEvent = AttributesEvent | ActionEvent | SessionEventEvent | ErrorEvent | EndEvent
EVENT_TYPES = ("attributes", "action", "event", "error", "end")
