"""Realistic completed user sessions, shaped like the documentation's samples, deterministic per seed.

Times, counts and ratings are consistent the way a real session's are: ``startTime`` is the first
action's start, ``endTime`` the last action's end, ``userActionCount`` and ``totalErrorCount`` count
what the session holds, actions are rated by Apdex and the session by the user experience score.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from sessionexport.model.scores import apdex_category, user_experience_score
from sessionexport.model.session import ApdexCategory

Kind = Literal["web", "mobile", "synthetic", "mixed"]
KINDS: tuple[Kind, ...] = ("web", "mobile", "synthetic", "mixed")

TENANTS = ("umsaywsjuo", "abc12345", "prod7788")

# (continent, country, region, city, isp, first IPv4 octets)
GEO = (
    ("Europe", "Poland", "Kujawsko-Pomorskie", "Bydgoszcz", "Orange Polska", "157.25"),
    ("Europe", "Germany", "Bavaria", "Munich", "Deutsche Telekom AG", "91.64"),
    ("Europe", "Austria", "Upper Austria", "Linz", "A1 Telekom Austria", "80.108"),
    ("Europe", "France", "Ile-de-France", "Paris", "Orange S.A.", "90.12"),
    ("North America", "United States", "Florida", "Delray Beach", "Comcast Cable", "73.12"),
    ("North America", "United States", "California", "San Jose", "AT&T Services", "107.77"),
    ("North America", "Canada", "Ontario", "Toronto", "Rogers Communications", "99.228"),
    ("South America", "Brazil", "Sao Paulo", "Sao Paulo", "Vivo", "177.139"),
    ("Asia", "Japan", "Tokyo", "Tokyo", "NTT Communications", "153.156"),
    ("Asia", "India", "Karnataka", "Bengaluru", "Reliance Jio", "49.36"),
    ("Oceania", "Australia", "New South Wales", "Sydney", "Telstra", "101.160"),
)

# (browserType, browserFamily, browserMajorVersion, osFamily, osVersion, clientType, width, height, resolution)
BROWSERS = (
    (
        "Desktop Browser",
        "Chrome",
        "Chrome 131",
        "Windows",
        "Windows 11",
        "Desktop Browser",
        1920,
        1080,
        "FHD",
    ),
    ("Desktop Browser", "Firefox", "Firefox 133", "Linux", "Linux", "Desktop Browser", 2560, 1440, "QHD"),
    ("Desktop Browser", "Safari", "Safari 18", "macOS", "macOS 15", "Desktop Browser", 1440, 900, "WXGAPlus"),
    ("Desktop Browser", "Edge", "Edge 131", "Windows", "Windows 10", "Desktop Browser", 1366, 768, "WXGA"),
    (
        "Mobile Browser",
        "Chrome Mobile",
        "Chrome Mobile 131",
        "Android",
        "Android 14",
        "Mobile Browser",
        412,
        915,
        "UNKNOWN",
    ),
    (
        "Mobile Browser",
        "Safari Mobile",
        "Safari Mobile 18",
        "iOS",
        "iOS 18.1",
        "Mobile Browser",
        390,
        844,
        "UNKNOWN",
    ),
    (
        "Tablet Browser",
        "Safari Mobile",
        "Safari Mobile 17",
        "iOS",
        "iPadOS 17.5",
        "Tablet Browser",
        820,
        1180,
        "UNKNOWN",
    ),
)

# (manufacturer, device, osFamily, osVersion, width, height, carrier, networkTechnology, connectionType)
DEVICES = (
    ("Samsung", "Galaxy S24", "Android", "Android 14", 1080, 2340, "Vodafone", "LTE", "MOBILE"),
    ("Google", "Pixel 8", "Android", "Android 15", 1080, 2400, "T-Mobile", "5G", "MOBILE"),
    ("Apple", "iPhone 15", "iOS", "iOS 18.1", 1179, 2556, "AT&T", "5G", "MOBILE"),
    ("Apple", "iPhone 13", "iOS", "iOS 17.6", 1170, 2532, "", "", "WIFI"),
    ("Xiaomi", "Redmi Note 13", "Android", "Android 13", 1080, 2400, "Orange", "LTE", "WIFI"),
)

WEB_APPS = (
    ("easyTravel Portal", "APPLICATION-EA7C4B59F27D43EB", "www.easytravel.com"),
    ("Shop Frontend", "APPLICATION-3F1C2A7D9B4E6A10", "shop.example.com"),
)
MOBILE_APPS = (
    ("easyTravel Demo", "MOBILE_APPLICATION-752C288D59734C79"),
    ("Shop App", "MOBILE_APPLICATION-1A2B3C4D5E6F7081"),
)
PAGES = (
    "/",
    "/index.html",
    "/search",
    "/results",
    "/offer/42",
    "/booking",
    "/payment",
    "/confirmation",
    "/account",
)
XHRS = ("/api/offers", "/api/search?q=<masked>", "/api/cart", "/api/user/profile", "/api/recommendations")
CLICKS = ('click on "Search"', 'click on "Book now"', 'click on "Login"', 'click on "Next"', 'click on "Pay"')
MOBILE_ACTIONS = (
    "Checkout",
    "Search",
    "Login",
    "Open offer",
    "Add to cart",
    "Touch on Book",
    "Loading MainActivity",
)
JS_ERRORS = (
    "TypeError: Cannot read properties of undefined",
    "ReferenceError: dtrum is not defined",
    "Error: Network request failed",
    "SyntaxError: Unexpected token <",
)
CRASHES = ("ThrowAsync", "NullPointerException", "IndexOutOfBoundsException")
SYNTHETIC_STEPS = ("navigate", "keystrokes", "click", "click", "click")


@dataclass(frozen=True, slots=True)
class GeneratorOptions:
    kind: Kind = "mixed"
    actions: tuple[int, int] = (1, 12)  # user actions per session, inclusive range
    end_ms: int = 1_700_000_000_000  # every session ends at or before this time
    span_ms: int = 6 * 60 * 60 * 1000  # ... and starts at or after end_ms - span_ms when it fits

    def __post_init__(self) -> None:
        low, high = self.actions
        if not 1 <= low <= high:
            raise ValueError(f"actions must be a range MIN-MAX with 1 <= MIN <= MAX, got {low}-{high}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


def generate_sessions(
    count: int, seed: int, options: GeneratorOptions = GeneratorOptions()
) -> Iterator[dict[str, Any]]:
    """``count`` sessions as dicts; the same seed and options give the same sessions."""
    rng = random.Random(seed)
    for index in range(count):
        kind = rng.choice(("web", "web", "mobile", "synthetic")) if options.kind == "mixed" else options.kind
        yield _session(rng, index, kind, options)


def generate_lines(count: int, seed: int, options: GeneratorOptions = GeneratorOptions()) -> Iterator[bytes]:
    """The same sessions as compact JSON lines (no trailing newline)."""
    for session in generate_sessions(count, seed, options):
        yield orjson.dumps(session)


def _session(rng: random.Random, index: int, kind: str, options: GeneratorOptions) -> dict[str, Any]:
    n_actions = rng.randint(*options.actions)
    start = options.end_ms - options.span_ms + rng.randrange(max(options.span_ms - 2 * 60 * 60 * 1000, 1))
    tenant = TENANTS[index % len(TENANTS)]
    user_number = rng.randrange(1, 400_000)
    base = _base(rng, tenant, index, user_number, start, kind)
    if kind == "mobile":
        base.update(_mobile_client(rng))
        actions, events, errors = _mobile_actions(rng, start, n_actions)
    else:
        base.update(_web_client(rng, synthetic=kind == "synthetic"))
        actions, events, errors = _web_actions(rng, start, n_actions, synthetic=kind == "synthetic")
    end = max(a["endTime"] for a in actions)
    rage = sum(1 for e in events if e["type"] == "RageClick")
    crashes = sum(1 for e in errors if e["type"] == "Crash")
    js_errors = sum(1 for e in errors if e["type"] == "Error")
    base.update(
        endTime=end,
        duration=end - start,
        bounce=len(actions) <= 1,
        userActionCount=len(actions),
        totalErrorCount=len(errors),
        hasError=bool(errors),
        hasCrash=crashes > 0,
        numberOfRageClicks=rage,
        userExperienceScore=user_experience_score(
            (ApdexCategory(a["apdexCategory"]) for a in actions),
            errors=js_errors,
            rage_events=rage,
            crashes=crashes,
        ).value,
        userActions=actions,
        events=events,
        errors=errors,
    )
    if kind == "synthetic":
        base["syntheticEvents"] = _synthetic_events(actions)
        base["endReason"] = "END_EVENT"
    else:
        base["endReason"] = rng.choice(("TIMEOUT", "TIMEOUT", "TIMEOUT", "END_EVENT"))
    if end > options.end_ms:
        _shift_times(base, options.end_ms - end)
    return base


_TIME_FIELDS = frozenset(("startTime", "endTime", "navigationStart", "timestamp"))


def _shift_times(value: Any, delta: int) -> None:
    """Move every timestamp of a session by ``delta`` ms (durations and offsets stay)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _TIME_FIELDS and isinstance(item, int):
                value[key] = item + delta
            else:
                _shift_times(item, delta)
    elif isinstance(value, list):
        for item in value:
            _shift_times(item, delta)


def _base(
    rng: random.Random, tenant: str, index: int, user_number: int, start: int, kind: str
) -> dict[str, Any]:
    continent, country, region, city, isp, prefix = rng.choice(GEO)
    synthetic = kind == "synthetic"
    return {
        "tenantId": tenant,
        "userSessionId": f"{user_number}_{index}",
        "startTime": start,
        "endTime": start,
        "duration": 0,
        "internalUserId": f"{user_number}{rng.randrange(10**9):09d}",
        "userId": None if synthetic or rng.random() < 0.4 else f"user{user_number}@example.com",
        "userType": "SYNTHETIC" if synthetic else ("ROBOT" if rng.random() < 0.03 else "REAL_USER"),
        "applicationType": "MOBILE_APPLICATION" if kind == "mobile" else "WEB_APPLICATION",
        "bounce": False,
        "newUser": rng.random() < 0.3,
        "userActionCount": 0,
        "totalErrorCount": 0,
        "totalLicenseCreditCount": 0 if synthetic else 1,
        "matchingConversionGoals": [],
        "matchingConversionGoalsCount": 0,
        "ip": f"{prefix}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        "continent": continent,
        "country": country,
        "region": "synthetic" if synthetic else region,
        "city": city,
        "isp": isp,
        "hasSessionReplay": False,
        "stringProperties": [{"key": "plan", "value": rng.choice(("free", "pro", "enterprise"))}]
        if not synthetic
        else [],
        "longProperties": [],
        "doubleProperties": [{"key": "cartvalue", "value": round(rng.uniform(5, 900), 2)}]
        if rng.random() < 0.3
        else [],
        "dateProperties": [],
        "partNumber": 0,
    }


def _web_client(rng: random.Random, synthetic: bool) -> dict[str, Any]:
    if synthetic:
        return {
            "browserType": "Synthetic Agent",
            "browserFamily": "Synthetic monitor",
            "browserMajorVersion": "Synthetic monitor",
            "osFamily": "Linux",
            "osVersion": "Linux",
            "screenHeight": 1080,
            "screenWidth": 1920,
            "screenOrientation": "LANDSCAPE",
            "displayResolution": "FHD",
            "clientType": "Synthetic Agent",
            "connectionType": "UNKNOWN",
            "browserMonitorId": f"SYNTHETIC_TEST-{rng.randrange(16**16):016X}",
            "browserMonitorName": "easytravel.com - browser monitor - booking",
        }
    btype, family, version, os_family, os_version, client, width, height, resolution = rng.choice(BROWSERS)
    return {
        "browserType": btype,
        "browserFamily": family,
        "browserMajorVersion": version,
        "osFamily": os_family,
        "osVersion": os_version,
        "screenHeight": height,
        "screenWidth": width,
        "screenOrientation": "LANDSCAPE" if width > height else "PORTRAIT",
        "displayResolution": resolution,
        "clientType": client,
        "connectionType": "UNKNOWN",
    }


def _mobile_client(rng: random.Random) -> dict[str, Any]:
    manufacturer, device, os_family, os_version, width, height, carrier, network, connection = rng.choice(
        DEVICES
    )
    return {
        "osFamily": os_family,
        "osVersion": os_version,
        "manufacturer": manufacturer,
        "device": device,
        "screenHeight": height,
        "screenWidth": width,
        "screenOrientation": "PORTRAIT",
        "displayResolution": "FHD",
        "clientType": "Mobile App",
        "appVersion": f"{rng.randint(1, 4)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
        "carrier": carrier or None,
        "networkTechnology": network or None,
        "connectionType": connection,
        "rootedOrJailbroken": False,
        "clientTimeOffset": rng.randint(-500, 500),
        "numberOfRageTaps": 0,
    }


def _empty_properties() -> dict[str, Any]:
    return {"stringProperties": [], "longProperties": [], "doubleProperties": [], "dateProperties": []}


def _web_actions(
    rng: random.Random, start: int, count: int, synthetic: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    app, app_id, domain = rng.choice(WEB_APPS)
    actions, events, errors = [], [], []
    t = start
    for i in range(count):
        is_load = i == 0 or rng.random() < 0.4
        duration = int(rng.lognormvariate(6.6 if is_load else 5.8, 0.8)) + 20
        network = max(1, int(duration * rng.uniform(0.05, 0.2)))
        server = max(1, int(duration * rng.uniform(0.1, 0.4)))
        frontend = max(0, duration - network - server)
        has_js_error = rng.random() < 0.06
        page = rng.choice(PAGES)
        name = f"Loading of page {page}" if is_load else rng.choice(XHRS + CLICKS)
        request_start = rng.randint(1, 15)
        action = {
            "name": name,
            "domain": domain,
            "targetUrl": f"https://{domain}{page}",
            "type": "Load" if is_load else "Xhr",
            "startTime": t,
            "endTime": t + duration,
            "duration": duration,
            "application": app,
            "internalApplicationId": app_id,
            "speedIndex": duration if is_load else None,
            "apdexCategory": apdex_category(duration, has_js_error).value,
            "matchingConversionGoals": [],
            "networkTime": network,
            "serverTime": server,
            "frontendTime": frontend,
            "documentInteractiveTime": int(duration * 0.6) if is_load else None,
            "thirdPartyResources": rng.randint(0, 12),
            "thirdPartyBusyTime": rng.randint(0, 900),
            "cdnResources": rng.randint(0, 30),
            "cdnBusyTime": rng.randint(0, 600) or None,
            "firstPartyResources": rng.randint(1, 25),
            "firstPartyBusyTime": rng.randint(20, 1500),
            "domCompleteTime": duration - 5 if is_load else None,
            "domContentLoadedTime": int(duration * 0.7) if is_load else None,
            "loadEventStart": duration - 4 if is_load else None,
            "loadEventEnd": duration - 1 if is_load else None,
            "navigationStart": t + rng.randint(0, min(80, duration)),
            "requestStart": request_start,
            "responseStart": request_start + server,
            "responseEnd": request_start + server + network,
            "visuallyCompleteTime": duration - 2 if is_load else None,
            "syntheticEvent": None,
            "syntheticEventId": None,
            "keyUserAction": is_load and page in ("/booking", "/payment"),
            **_empty_properties(),
            "userActionPropertyCount": 0,
            "customErrorCount": 0,
            "javascriptErrorCount": 1 if has_js_error else 0,
            "requestErrorCount": 1 if rng.random() < 0.04 else 0,
            "largestContentfulPaint": int(duration * 0.8) if is_load else None,
            "firstInputDelay": rng.randint(1, 120) if is_load else None,
            "totalBlockingTime": None,
            "cumulativeLayoutShift": round(rng.uniform(0, 0.3), 3) if is_load else None,
        }
        if synthetic:
            action["syntheticEvent"] = name
            action["syntheticEventId"] = f"SYNTHETIC_TEST_STEP-{rng.randrange(16**16):016X}"
        actions.append(action)
        if has_js_error:
            errors.append(
                {
                    "type": "Error",
                    "name": rng.choice(JS_ERRORS),
                    "domain": domain,
                    "startTime": t + duration // 2,
                    "application": app,
                    "internalApplicationId": app_id,
                }
            )
        if is_load:
            events.append(
                {
                    "type": "PageChange",
                    "name": page,
                    "domain": domain,
                    "startTime": t,
                    "application": app,
                    "internalApplicationId": app_id,
                    "page": page,
                    "pageGroup": page.split("/")[1] or "home",
                }
            )
        if rng.random() < 0.03:
            events.append(
                {
                    "type": "RageClick",
                    "name": "Rage click",
                    "domain": domain,
                    "startTime": t + duration,
                    "application": app,
                    "internalApplicationId": app_id,
                }
            )
        t += duration + int(rng.expovariate(1 / 9000)) + 200
    return actions, events, errors


def _mobile_actions(
    rng: random.Random, start: int, count: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    app, app_id = rng.choice(MOBILE_APPS)
    actions, events, errors = [], [], []
    t = start
    for _ in range(count):
        duration = int(rng.lognormvariate(5.5, 0.9)) + 5
        crashed = rng.random() < 0.01
        actions.append(
            {
                "name": rng.choice(MOBILE_ACTIONS),
                "type": "Custom",
                "startTime": t,
                "endTime": t + duration,
                "duration": duration,
                "application": app,
                "internalApplicationId": app_id,
                "apdexCategory": apdex_category(duration, crashed).value,
                "matchingConversionGoals": [],
                "networkTime": None,
                "serverTime": None,
                "frontendTime": None,
                "hasCrash": crashed,
                "thirdPartyBusyTime": 0,
                "cdnBusyTime": 0,
                "firstPartyBusyTime": 0,
                "keyUserAction": False,
                **_empty_properties(),
                "userActionPropertyCount": 0,
                "customErrorCount": 0,
                "javascriptErrorCount": 0,
                "requestErrorCount": 0,
            }
        )
        if crashed:
            errors.append(
                {
                    "type": "Crash",
                    "name": rng.choice(CRASHES),
                    "startTime": t + duration,
                    "application": app,
                    "internalApplicationId": app_id,
                }
            )
        t += duration + int(rng.expovariate(1 / 15000)) + 100
        if crashed:
            break
    if rng.random() < 0.5:
        events.append(
            {
                "type": "UserTag",
                "name": f"user{rng.randrange(10**6)}",
                "startTime": start,
                "application": app,
                "internalApplicationId": app_id,
            }
        )
    return actions, events, errors


def _synthetic_events(actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "name": a["name"],
            "syntheticEventId": a["syntheticEventId"],
            "sequenceNumber": i,
            "timestamp": a["startTime"],
            "type": SYNTHETIC_STEPS[min(i - 1, len(SYNTHETIC_STEPS) - 1)],
        }
        for i, a in enumerate(actions, start=1)
    ]
