"""Connection strings, read once by libpq's rules (URI and key=value), and the redacted form that alone is printed.

Every place that shows, logs, records or hands on a DSN goes through ``parse``: asyncpg gets a
canonical URI rebuilt from the parsed keywords (asyncpg reads URIs only, with urllib's rules, not
libpq's), pg_dump gets libpq environment variables, messages get ``redact``. A string that does
not parse is never echoed, not even in part: an unencoded password is what makes it unparseable.
``scrub`` removes every password seen so far (``remember_secret``) from free text as a last net.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import quote

from bxbatch.errors import UsageError

URI_PREFIXES = ("postgresql://", "postgres://")

# libpq's connection keywords (libpq "Parameter Key Words"); anything else is refused as libpq does.
KEYWORDS = frozenset(
    {
        "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "require_auth", "channel_binding",
        "connect_timeout", "client_encoding", "options", "application_name", "fallback_application_name",
        "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
        "replication", "gssencmode", "sslmode", "sslnegotiation", "requiressl", "sslcompression", "sslcert",
        "sslkey", "sslkeylogfile", "sslpassword", "sslcertmode", "sslrootcert", "sslcrl", "sslcrldir", "sslsni",
        "requirepeer", "ssl_min_protocol_version", "ssl_max_protocol_version", "krbsrvname", "gsslib",
        "gssdelegation", "service", "target_session_attrs", "load_balance_hosts", "min_protocol_version",
        "max_protocol_version", "scram_client_key", "scram_server_key", "oauth_issuer", "oauth_client_id",
        "oauth_client_secret", "oauth_scope",
    }
)  # fmt: skip
SECRET_KEYWORDS = frozenset({"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"})

# Keywords asyncpg understands in a URI's query (it sends any other as a server setting, which
# libpq keywords are not): the rest must be refused rather than silently misread.
_ASYNCPG_QUERY = frozenset(
    {
        "host", "port", "dbname", "user", "password", "passfile", "sslmode", "sslcert", "sslkey", "sslrootcert",
        "sslcrl", "sslpassword", "ssl_min_protocol_version", "ssl_max_protocol_version", "target_session_attrs",
        "krbsrvname", "gsslib", "service", "servicefile", "application_name", "client_encoding", "connect_timeout",
    }
)  # fmt: skip
_IGNORED_FOR_ASYNCPG = frozenset({"fallback_application_name", "keepalives", "keepalives_idle", "sslnegotiation"})

_SECRETS: set[str] = set()


@dataclass(frozen=True)
class ConnInfo:
    """A parsed connection string: libpq keywords -> values (host and port may be comma lists)."""

    params: dict[str, str] = field(default_factory=dict)
    uri: bool = False

    @property
    def password(self) -> str | None:
        return self.params.get("password")


def _invalid(what: str) -> UsageError:
    return UsageError(
        f"invalid connection string: {what} (the string is not shown: it may hold a password)",
        hint="percent-encode reserved characters of a URI (@ %40, / %2F, : %3A, # %23, ? %3F, % %25), "
        "quote key=value values with spaces ('...'), or pass the password as PGPASSWORD",
    )


def _shown_key(key: str) -> str:
    """An unknown keyword, echoed only if it looks like one (a stray password fragment is not shown)."""
    return repr(key) if re.fullmatch(r"[A-Za-z_]{1,30}", key) else "(not shown)"


def _decode(text: str, where: str) -> str:
    """libpq's percent-decoding: %XX only, no %00."""
    out = bytearray()
    i = 0
    raw = text.encode()
    while i < len(raw):
        if raw[i] == ord("%"):
            pair = raw[i + 1 : i + 3].decode("ascii", "replace")
            if len(pair) != 2 or not re.fullmatch(r"[0-9A-Fa-f]{2}", pair):
                raise _invalid(f"invalid percent-encoded token in the {where}")
            if pair == "00":
                raise _invalid(f"forbidden value %00 in the {where}")
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    try:
        return out.decode()
    except UnicodeDecodeError:
        raise _invalid(f"percent-encoded bytes in the {where} are not UTF-8") from None


def _parse_uri(dsn: str) -> ConnInfo:
    prefix = next(p for p in URI_PREFIXES if dsn.startswith(p))
    rest = dsn[len(prefix) :]
    params: dict[str, str] = {}
    # libpq: user info runs to the first '@' met before any '/' (or '?': a query cannot hold userinfo)
    at = re.match(r"[^@/?]*@", rest)
    if at:
        userinfo = rest[: at.end() - 1]
        rest = rest[at.end() :]
        user, sep, password = userinfo.partition(":")
        if user:
            params["user"] = _decode(user, "user name")
        if sep:
            params["password"] = _decode(password, "password")
    hosts: list[str] = []
    ports: list[str] = []
    while rest and rest[0] not in "/?":
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0:
                raise _invalid("unterminated [IPv6 address]")
            host, rest = rest[1:end], rest[end + 1 :]
        else:
            m = re.match(r"[^:,/?]*", rest)
            assert m is not None
            host, rest = _decode(m.group(0), "host"), rest[m.end() :]
        port = ""
        if rest.startswith(":"):
            m = re.match(r":([^,/?]*)", rest)
            assert m is not None
            port, rest = m.group(1), rest[m.end() :]
            if port and not port.isdigit():
                raise _invalid("the port is not a number")
        hosts.append(host)
        ports.append(port)
        if rest.startswith(","):
            rest = rest[1:]
        elif rest and rest[0] not in "/?":
            raise _invalid("unexpected character after the host")
    if any(hosts):
        params["host"] = ",".join(hosts)
    if any(ports):
        params["port"] = ",".join(ports)
    if rest.startswith("/"):
        path, _, query = rest[1:].partition("?")
        if path:
            params["dbname"] = _decode(path, "database name")
    else:
        query = rest[1:] if rest.startswith("?") else ""
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or "=" in value:
            raise _invalid("a URI query parameter is not key=value")
        key = _decode(key, "query")
        if key == "ssl" and value == "true":
            key, value = "sslmode", "require"  # JDBC spelling libpq accepts
        if key not in KEYWORDS:
            raise _invalid(f"unknown URI query parameter {_shown_key(key)}")
        params[key] = _decode(value, f"{key} parameter")
    return ConnInfo(params, uri=True)


def _parse_keywords(dsn: str) -> ConnInfo:
    """libpq's conninfo_parse: ``key = value`` pairs; values quoted with '...' and backslash escapes."""
    params: dict[str, str] = {}
    i, n = 0, len(dsn)
    while True:  # the scanner of a keyword/value string (not a retry)
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n:
            return ConnInfo(params)
        start = i
        while i < n and not dsn[i].isspace() and dsn[i] != "=":
            i += 1
        key = dsn[start:i]
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n or dsn[i] != "=":
            raise _invalid('missing "=" after a keyword')
        i += 1
        while i < n and dsn[i].isspace():
            i += 1
        value: list[str] = []
        if i < n and dsn[i] == "'":
            i += 1
            while True:  # a quoted value, to its closing quote
                if i >= n:
                    raise _invalid("unterminated quoted value")
                if dsn[i] == "\\" and i + 1 < n:
                    value.append(dsn[i + 1])
                    i += 2
                elif dsn[i] == "'":
                    i += 1
                    break
                else:
                    value.append(dsn[i])
                    i += 1
        else:
            while i < n and not dsn[i].isspace():
                if dsn[i] == "\\" and i + 1 < n:
                    value.append(dsn[i + 1])
                    i += 2
                else:
                    value.append(dsn[i])
                    i += 1
        if key not in KEYWORDS:
            raise _invalid(f"unknown keyword {_shown_key(key)}")
        params[key] = "".join(value)


def parse(dsn: str) -> ConnInfo:
    """Parse a URI (``postgresql://``) or key=value connection string; UsageError (never echoing it) if invalid."""
    info = _parse_uri(dsn) if dsn.startswith(URI_PREFIXES) else _parse_keywords(dsn)
    for key in SECRET_KEYWORDS & info.params.keys():
        remember_secret(info.params[key])
    return info


def _quote_kv(value: str) -> str:
    if value and not re.search(r"[\s'\\]", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def render(info: ConnInfo, *, redacted: bool = True) -> str:
    """The connection string rebuilt from its keywords, secrets as ``***`` unless ``redacted`` is False."""
    params = {k: ("***" if redacted and k in SECRET_KEYWORDS else v) for k, v in info.params.items()}
    if not info.uri:
        return " ".join(f"{k}={_quote_kv(v)}" for k, v in params.items())
    safe = "!$&'()*+,;=-._~"
    user = quote(params.pop("user", ""), safe=safe.replace(":", ""))
    password = params.pop("password", None)
    userinfo = ""
    if user or password is not None:
        userinfo = user + ("" if password is None else ":" + quote(password, safe=safe)) + "@"
    host = params.pop("host", "")
    port = params.pop("port", "")
    hosts = host.split(",") if host else [""]
    ports = port.split(",") if port else []
    netloc_parts = []
    query: dict[str, str] = {}
    if host.startswith("/"):  # Unix socket directory: a query parameter (asyncpg and libpq both read it)
        query["host"], hosts = host, [""]
    for i, h in enumerate(hosts):
        p = ports[i] if i < len(ports) else (ports[0] if len(ports) == 1 else "")
        h = f"[{h}]" if ":" in h else quote(h, safe="")
        netloc_parts.append(h + (f":{p}" if p else ""))
    if query and ports:
        query["port"] = port
        netloc_parts = [""]
    netloc = ",".join(netloc_parts)
    dbname = quote(params.pop("dbname", ""), safe="")
    query.update(params)
    q = "&".join(f"{quote(k, safe='')}={quote(v, safe='/')}" for k, v in query.items())
    return f"postgresql://{userinfo}{netloc}/{dbname}" + (f"?{q}" if q else "")


def redact(dsn: str | None) -> str:
    """The only form of a DSN that may be printed, logged or recorded."""
    if not dsn:
        return "(none)"
    try:
        return render(parse(dsn))
    except UsageError:
        return "(an invalid connection string, not shown)"


def for_asyncpg(dsn: str) -> str:
    """A URI asyncpg reads exactly as libpq reads ``dsn`` (asyncpg has no key=value parser)."""
    info = parse(dsn)
    unsupported = sorted(info.params.keys() - _ASYNCPG_QUERY - _IGNORED_FOR_ASYNCPG)
    if unsupported:
        raise UsageError(
            f"connection keyword {unsupported[0]!r} is not supported by bxbatch's driver (asyncpg)",
            hint="leave it out, or set it on the server / role instead",
        )
    params = {k: v for k, v in info.params.items() if k not in _IGNORED_FOR_ASYNCPG}
    return render(ConnInfo(params, uri=True), redacted=False)


def remember_secret(secret: str | None) -> None:
    """A password ``scrub`` must remove from any text from now on (its encoded forms too)."""
    if secret and len(secret) >= 3:  # shorter ones would blank out ordinary words
        _SECRETS.add(secret)


_DSN_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)([^@\s]*)(@)")
_KV_PASSWORD = re.compile(r"((?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)", re.IGNORECASE)


def scrub(text: str) -> str:
    """Free text (a server message, an exception, a log value) without any password: known ones, then patterns."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        for form in {secret, quote(secret, safe=""), quote(secret), _quote_kv(secret), repr(secret)[1:-1]}:
            if form:
                text = text.replace(form, "***")
    return _KV_PASSWORD.sub(r"\1***", _DSN_PASSWORD.sub(r"\1***\3", text))


# Where a connection goes: the DSN as given, else DATABASE_URL, else the libpq environment.
PG_ENV_VARS = ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGSERVICE")


def resolve_dsn(flag_or_bxbatch_env: str | None) -> str | None:
    """--dsn / BXBATCH_DSN, then DATABASE_URL; None means "libpq PG* variables" or "none given".

    asyncpg itself honours PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE when no DSN is passed.
    """
    if flag_or_bxbatch_env:
        return flag_or_bxbatch_env
    return os.environ.get("DATABASE_URL") or None


def libpq_env_present() -> bool:
    return any(os.environ.get(name) for name in PG_ENV_VARS)


def redact_dsn(dsn: str | None) -> str:
    """The DSN with any password replaced by ``***``: the only form that may be printed or logged."""
    if not dsn:
        return "(libpq environment)" if libpq_env_present() else "(none)"
    return redact(dsn)


def target_parts(dsn: str | None) -> dict[str, str]:
    """host, port, database and user a connection with ``dsn`` would use (libpq variables and
    defaults included, as asyncpg resolves them); never the password."""
    try:
        from asyncpg import connect_utils

        none: dict[str, None] = dict.fromkeys(
            [
                "host",
                "port",
                "user",
                "password",
                "passfile",
                "database",
                "ssl",
                "service",
                "servicefile",
                "direct_tls",
                "server_settings",
                "target_session_attrs",
                "krbsrvname",
                "gsslib",
            ]
        )
        resolve = connect_utils._parse_connect_dsn_and_args  # type: ignore[attr-defined]  # what asyncpg tries
        addrs, params = resolve(dsn=for_asyncpg(dsn) if dsn else None, **none)
    except Exception:
        return {"host": "?", "port": "?", "database": "?", "user": "?"}
    hosts, ports = [], []
    for addr in addrs:
        if isinstance(addr, tuple):
            hosts.append(str(addr[0]))
            ports.append(str(addr[1]))
        else:  # a unix socket path: /run/postgresql/.s.PGSQL.5432
            folder, _, name = str(addr).rpartition("/")
            hosts.append(folder or "/")
            ports.append(name.rpartition(".")[2])
    return {
        "host": hosts[0] if len(hosts) == 1 else "{" + ",".join(dict.fromkeys(hosts)) + "}",
        "port": ",".join(dict.fromkeys(ports)),
        "database": str(params.database),
        "user": str(params.user),
    }


def describe_target(dsn: str | None) -> str:
    """``database baserow on db.example:5432 as bob``: what every command names first."""
    t = target_parts(dsn)
    return f"database {t['database']} on {t['host']}:{t['port']} as {t['user']}"
