"""The exported user session: every field, type and enum of the session JSON.

One definition serves three purposes: fast typed decoding on ingest (msgspec), the exhaustive
problem report for rejected sessions (``validation``), and the Elasticsearch mapping.

Strict where it matters: the identity (``tenantId``, ``userSessionId``, ``startTime``) is
required, types and enums are checked, and timestamps must be epoch milliseconds. Tolerant where
real data is: every other field may be missing or ``null``, and unknown fields are kept (the
stored bytes are the sender's own; this model only reads them).

Legacy fields of the pre-2022 export format (``geolocation*Name``, ``stringTags`` ...) are part of
the model because real senders still emit them.
"""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Annotated, Any

import msgspec

# Epoch milliseconds, UTC. The lower bound (1973-03-03) catches the most common sender bug,
# timestamps in seconds; the upper bound (2286-11-20) catches microseconds.
EPOCH_MS_MIN = 100_000_000_000
EPOCH_MS_MAX = 9_999_999_999_999
# Every integer is a long where it is read (Elasticsearch's mapping, Java receivers): a bigger
# one is refused here, not by the receiver after the session was accepted. (The check costs about
# 0.6 us of the 12 us it takes to decode an 8 KB session.)
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
EpochMillis = Annotated[
    int,
    msgspec.Meta(
        ge=EPOCH_MS_MIN, le=EPOCH_MS_MAX, description="epoch milliseconds, UTC", extra={"kind": "epoch_ms"}
    ),
]
# Identifiers are kept in indexed database columns, and PostgreSQL refuses an index entry over
# 2704 bytes: at most 200 characters each (800 bytes in UTF-8), so that an identity of three fits.
IDENTIFIER_MAX_CHARS = 200
Identifier = Annotated[str, msgspec.Meta(min_length=1, max_length=IDENTIFIER_MAX_CHARS)]
# A user id is indexed beside a number: at most 512 characters.
UserId = Annotated[str, msgspec.Meta(max_length=512)]


class UserType(StrEnum):
    REAL_USER = "REAL_USER"
    ROBOT = "ROBOT"
    SYNTHETIC = "SYNTHETIC"


class ApplicationType(StrEnum):
    CUSTOM_APPLICATION = "CUSTOM_APPLICATION"
    MOBILE_APPLICATION = "MOBILE_APPLICATION"
    WEB_APPLICATION = "WEB_APPLICATION"
    AMP_APPLICATION = "AMP_APPLICATION"


class ScreenOrientation(StrEnum):
    LANDSCAPE = "LANDSCAPE"
    PORTRAIT = "PORTRAIT"
    UNDEFINED = "UNDEFINED"


_DISPLAY_RESOLUTIONS = (
    "CGA",
    "DCI2K",
    "DCI4K",
    "DVGA",
    "FHD",
    "FWVGA",
    "FWXGA",
    "GHDPlus",
    "HD",
    "HQVGA",
    "HQVGA2",
    "HSXGA",
    "HUXGA",
    "HVGA",
    "HXGA",
    "NTSC",
    "PAL",
    "QHD",
    "QQVGA",
    "QSXGA",
    "QUXGA",
    "QVGA",
    "QWXGA",
    "QXGA",
    "SVGA",
    "SXGA",
    "SXGAMinus",
    "SXGAPlus",
    "UGA",
    "UHD16K",
    "UHD4K",
    "UHD8K",
    "UHDPlus",
    "UNKNOWN",
    "UWQHD",
    "UXGA",
    "VGA",
    "WHSXGA",
    "WHUXGA",
    "WHXGA",
    "WQSXGA",
    "WQUXGA",
    "WQVGA",
    "WQVGA2",
    "WQVGA3",
    "WQXGA",
    "WQXGA2",
    "WSVGA",
    "WSVGA2",
    "WSXGA",
    "WSXGAPlus",
    "WUXGA",
    "WVGA",
    "WVGA2",
    "WXGA",
    "WXGA2",
    "WXGA3",
    "WXGAPlus",
    "XGA",
    "XGAPLUS",
    "_1280x854",
    "nHD",
    "qHD",
)
DisplayResolution = StrEnum("DisplayResolution", [(name, name) for name in _DISPLAY_RESOLUTIONS])  # type: ignore[misc]


class ReasonForNoSessionReplay(StrEnum):
    KILLED_EMERGENCY = "KILLED_EMERGENCY"
    KILLED_ERROR = "KILLED_ERROR"
    KILLED_INVALID_RESPONSE = "KILLED_INVALID_RESPONSE"
    KILLED_MIN_JS_AGENT_VERSION = "KILLED_MIN_JS_AGENT_VERSION"
    KILLED_NO_LICENSE = "KILLED_NO_LICENSE"
    KILLED_WRONG_CONTENT_TYPE = "KILLED_WRONG_CONTENT_TYPE"
    MISCONFIGURED_CLUSTER = "MISCONFIGURED_CLUSTER"
    MODULE_DISABLED = "MODULE_DISABLED"
    NO_ACTIVITY = "NO_ACTIVITY"
    OPTED_OUT_SESSION = "OPTED_OUT_SESSION"
    OPT_IN_MODE = "OPT_IN_MODE"
    ROBOT_DETECTED = "ROBOT_DETECTED"
    SAMPLED_OUT = "SAMPLED_OUT"
    UNABLE_TO_LOAD_WORKER = "UNABLE_TO_LOAD_WORKER"
    UNHANDLED_EXCEPTION = "UNHANDLED_EXCEPTION"
    UNKNOWN = "UNKNOWN"
    UNKNOWN_DOC_LOADED = "UNKNOWN_DOC_LOADED"
    UNSUPPORTED_BROWSER = "UNSUPPORTED_BROWSER"
    VIEW_EXCLUDED = "VIEW_EXCLUDED"


class ReasonForNoSessionReplayMobile(StrEnum):
    COST_CONTROL = "COST_CONTROL"
    CRASHES_OPTED_IN = "CRASHES_OPTED_IN"
    DISABLED = "DISABLED"
    FULL_STORAGE = "FULL_STORAGE"
    INVALID_CONFIGURATION = "INVALID_CONFIGURATION"
    NO_AGENT = "NO_AGENT"
    OPTED_OUT = "OPTED_OUT"
    RETENTION_TIME = "RETENTION_TIME"
    UNKNOWN = "UNKNOWN"


class ConnectionType(StrEnum):
    LAN = "LAN"
    MOBILE = "MOBILE"
    OFFLINE = "OFFLINE"
    UNKNOWN = "UNKNOWN"
    WIFI = "WIFI"


class EndReason(StrEnum):
    DURATION_LIMIT = "DURATION_LIMIT"
    END_EVENT = "END_EVENT"
    EXTENDED_TIMEOUT = "EXTENDED_TIMEOUT"
    TEST_FAILED = "TEST_FAILED"
    TIMEOUT = "TIMEOUT"
    USER_ACTION_LIMIT = "USER_ACTION_LIMIT"


class UserExperienceScore(StrEnum):
    FRUSTRATED = "FRUSTRATED"
    SATISFIED = "SATISFIED"
    TOLERATED = "TOLERATED"
    UNDEFINED = "UNDEFINED"


class UserActionType(StrEnum):
    Custom = "Custom"
    EndVisit = "EndVisit"
    Error = "Error"
    Load = "Load"
    RageClick = "RageClick"
    SyntheticHiddenAction = "SyntheticHiddenAction"
    UserSessionProperties = "UserSessionProperties"
    VisitTag = "VisitTag"
    Xhr = "Xhr"


class ApdexCategory(StrEnum):
    FRUSTRATED = "FRUSTRATED"
    SATISFIED = "SATISFIED"
    TOLERATING = "TOLERATING"
    UNKNOWN = "UNKNOWN"


class EventType(StrEnum):
    Behavioral = "Behavioral"
    Crash = "Crash"
    Error = "Error"
    PageChange = "PageChange"
    RageClick = "RageClick"
    RageTap = "RageTap"
    UserTag = "UserTag"
    UserTagFromMetaData = "UserTagFromMetaData"
    VisitTag = "VisitTag"


class _Doc(msgspec.Struct, kw_only=True, gc=False):
    """Base of every document part: all fields optional and nullable unless stated."""


class StringProperty(_Doc):
    key: str | None = None
    value: str | None = None


class LongProperty(_Doc):
    key: str | None = None
    value: Int64 | None = None


class DoubleProperty(_Doc):
    key: str | None = None
    value: float | None = None


# Text Elasticsearch reads as a date by the mapping's ``strict_date_optional_time||epoch_millis``:
# a date (year, month or day) with an optional time (hours to nanoseconds) and zone (at most 18 h
# off UTC), or epoch milliseconds as digits; ASCII digits only, each part in its range, nothing
# after it (not even a newline). What a pattern cannot tell, ``date_problem`` does.
ISO_DATE_TIME = (
    r"^([0-9]{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12][0-9]|3[01])(T([01][0-9]|2[0-3])"
    r"(:[0-5][0-9](:[0-5][0-9]([.,][0-9]{1,9})?)?)?(Z|[+-]((0[0-9]|1[0-7])(:?[0-5][0-9])?|18(:?00)?))?)?)?)?"
    r"|-?[0-9]{1,19})\Z"
)
IsoDateTime = Annotated[str, msgspec.Meta(pattern=ISO_DATE_TIME)]
_INT64 = range(-(2**63), 2**63)


def date_problem(text: str) -> str | None:
    """Why text of the form ISO_DATE_TIME is still no date: a day its month does not have
    (2026-02-30), or epoch milliseconds beyond a 64-bit integer (Elasticsearch's long)."""
    if len(text) >= 10 and text[4] == "-" and text[7] == "-":
        try:
            datetime.date(int(text[:4]), int(text[5:7]), int(text[8:10]))
        except ValueError as exc:
            return str(exc)
    elif text.removeprefix("-").isdigit() and int(text) not in _INT64:
        return "beyond a 64-bit integer"
    return None


class DateProperty(_Doc):
    key: str | None = None
    # ISO-8601 text or epoch milliseconds: real exports have been seen with both. Other text
    # would be refused by Elasticsearch (the mapping makes the value a date), its bulk's
    # session a dead letter.
    value: IsoDateTime | Int64 | None = None

    def __post_init__(self) -> None:
        if isinstance(self.value, str) and (why := date_problem(self.value)):
            raise ValueError(f"{self.value!r} is no date: {why}")


class _WithProperties(_Doc):
    stringProperties: list[StringProperty] | None = None
    longProperties: list[LongProperty] | None = None
    doubleProperties: list[DoubleProperty] | None = None
    dateProperties: list[DateProperty] | None = None


class UserAction(_WithProperties):
    name: str | None = None
    domain: str | None = None
    targetUrl: str | None = None
    type: UserActionType | None = None
    startTime: EpochMillis | None = None
    endTime: EpochMillis | None = None
    duration: Int64 | None = None
    application: str | None = None
    internalApplicationId: str | None = None
    internalKeyUserActionId: str | None = None
    keyUserAction: bool | None = None
    apdexCategory: ApdexCategory | None = None
    matchingConversionGoals: list[str] | None = None
    speedIndex: Int64 | None = None
    networkTime: Int64 | None = None
    serverTime: Int64 | None = None
    frontendTime: Int64 | None = None
    documentInteractiveTime: Int64 | None = None
    domCompleteTime: Int64 | None = None
    domContentLoadedTime: Int64 | None = None
    loadEventStart: Int64 | None = None
    loadEventEnd: Int64 | None = None
    navigationStart: EpochMillis | None = None
    requestStart: Int64 | None = None
    responseStart: Int64 | None = None
    responseEnd: Int64 | None = None
    visuallyCompleteTime: Int64 | None = None
    thirdPartyResources: Int64 | None = None
    thirdPartyBusyTime: Int64 | None = None
    cdnResources: Int64 | None = None
    cdnBusyTime: Int64 | None = None
    firstPartyResources: Int64 | None = None
    firstPartyBusyTime: Int64 | None = None
    hasCrash: bool | None = None
    syntheticEvent: str | None = None
    syntheticEventId: str | None = None
    userActionPropertyCount: Int64 | None = None
    customErrorCount: Int64 | None = None
    javascriptErrorCount: Int64 | None = None
    requestErrorCount: Int64 | None = None
    largestContentfulPaint: Int64 | None = None
    firstInputDelay: Int64 | None = None
    totalBlockingTime: Int64 | None = None
    cumulativeLayoutShift: float | None = None
    # legacy (deprecated since 1.217, still in old-format exports)
    errorCount: Int64 | None = None
    failedImages: Int64 | None = None
    failedXhrRequests: Int64 | None = None
    httpRequestsWithErrors: Int64 | None = None


class SessionError(_Doc):
    type: EventType | None = None
    name: str | None = None
    domain: str | None = None
    startTime: EpochMillis | None = None
    application: str | None = None
    internalApplicationId: str | None = None


class SessionEvent(SessionError):
    metadata: str | None = None
    page: str | None = None
    pageGroup: str | None = None
    pageReferrer: str | None = None
    pageReferrerGroup: str | None = None


class SyntheticEvent(_Doc):
    name: str | None = None
    syntheticEventId: str | None = None
    sequenceNumber: Int64 | None = None
    timestamp: EpochMillis | None = None
    type: str | None = None
    errorCode: Int64 | None = None
    errorName: str | None = None


class UserSession(_WithProperties, kw_only=True):
    tenantId: Identifier
    userSessionId: Identifier
    startTime: EpochMillis
    endTime: EpochMillis | None = None
    duration: Int64 | None = None
    internalUserId: str | None = None
    userId: UserId | None = None
    userType: UserType | None = None
    applicationType: ApplicationType | None = None
    bounce: bool | None = None
    newUser: bool | None = None
    userActionCount: Int64 | None = None
    totalErrorCount: Int64 | None = None
    totalLicenseCreditCount: Int64 | None = None
    matchingConversionGoals: list[str] | None = None
    matchingConversionGoalsCount: Int64 | None = None
    ip: str | None = None
    continent: str | None = None
    country: str | None = None
    region: str | None = None
    city: str | None = None
    isp: str | None = None
    browserType: str | None = None
    browserFamily: str | None = None
    browserMajorVersion: str | None = None
    osFamily: str | None = None
    osVersion: str | None = None
    manufacturer: str | None = None
    device: str | None = None
    screenHeight: Int64 | None = None
    screenWidth: Int64 | None = None
    screenOrientation: ScreenOrientation | None = None
    displayResolution: DisplayResolution | None = None
    clientType: str | None = None
    browserMonitorId: str | None = None
    browserMonitorName: str | None = None
    hasCrash: bool | None = None
    hasError: bool | None = None
    hasSessionReplay: bool | None = None
    crashGroupId: str | None = None
    replayStart: EpochMillis | None = None
    replayEnd: EpochMillis | None = None
    reasonForNoSessionReplay: ReasonForNoSessionReplay | None = None
    reasonForNoSessionReplayMobile: ReasonForNoSessionReplayMobile | None = None
    appVersion: str | None = None
    carrier: str | None = None
    networkTechnology: str | None = None
    connectionType: ConnectionType | None = None
    rootedOrJailbroken: bool | None = None
    clientTimeOffset: Int64 | None = None
    endReason: EndReason | None = None
    numberOfRageClicks: Int64 | None = None
    numberOfRageTaps: Int64 | None = None
    userExperienceScore: UserExperienceScore | None = None
    partNumber: Int64 | None = None
    userActions: list[UserAction] | None = None
    events: list[SessionEvent] | None = None
    errors: list[SessionError] | None = None
    syntheticEvents: list[SyntheticEvent] | None = None
    # legacy (pre-2022 export format)
    geolocationContinentName: str | None = None
    geolocationCountryName: str | None = None
    geolocationRegionName: str | None = None
    geolocationCityName: str | None = None
    osFamilyName: str | None = None
    osVersionName: str | None = None
    stringTags: dict[str, Any] | None = None
    numTags: dict[str, Any] | None = None
    dateTags: dict[str, Any] | None = None

    @property
    def identity(self) -> tuple[str, str, int]:
        return (self.tenantId, self.userSessionId, self.startTime)
