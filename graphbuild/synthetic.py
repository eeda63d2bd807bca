"""Synthetic KuaiLive-layout dataset with planted interest topics (see docs/DATA_FORMAT.md).

Why synthetic: the pipeline must be testable at any scale, and graph expansion must be
*measurable*: the planted truth (topics of users and streamers, streamer debut days) lets tests
and evaluation check that expansion finds the streamers a gifter will gift next.

The world, in short:
- every streamer has a topic, a Zipf popularity, a debut day and per-modality "style" vectors;
- every user has a main and a second topic (plus a cross-topic share), a heavy-tailed activity;
  a minority are gifters, with a heavy-tailed propensity, a price level and a few favourites;
- each day, live streamers open one or two rooms; gifts go to favourites (repeats) or to
  streamers explored within the user's topics by popularity, new streamers boosted: so future
  gifts reach streamers never gifted before, which only the graph (co-gifters, topics) predicts;
- every gift is preceded by a click of the same user in the same room; browsing clicks,
  comments and likes follow the same affinities and are far more frequent than gifts;
- segment vectors are the streamer's style plus per-modality noise: real, imperfect signal.

Everything is vectorised per day with numpy and written in per-day chunks, so memory stays
bounded by two days of events (one drawn, one written). Each day draws from its own child
seed: same arguments, same bytes.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import gie
from gie import environment
from gie.errors import BadInputError
from gie.layout import parse_date
from gie.progress import progress
from gie.publish import staged_output, write_json_atomic
from graphbuild.schema import MODALITIES, RAW_TABLES

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
MINUTE_MS = 60_000
USER_ID_BASE = 100_000_000        # disjoint id ranges make a user/streamer mix-up visible
STREAMER_ID_BASE = 200_000_000
LIVE_ID_BASE = 300_000_000
MAX_FAVOURITES = 5
GIFT_LEAD_MS = MINUTE_MS          # a gift comes at least this long after its room opens
MAX_CLICK_TO_GIFT_MS = 5 * MINUTE_MS

AGES = ["12-17", "18-23", "24-30", "31-40", "41-49", "50+"]
GENDERS = ["F", "M"]
COUNTRIES = ["CN"] * 8 + ["SG", "MY"]          # drawn uniformly: mostly CN
BRANDS = ["Apple", "HUAWEI", "OPPO", "vivo", "Xiaomi", "Honor", "Other"]
DEVICE_PRICES = ["[0,1000)", "[1000,2000)", "[2000,3000)", "[3000,5000)", "[5000,+inf)"]
COUNT_RANGES = ["[0,10)", "[10,100)", "[100,1k)", "[1k,10k)", "[10k,100k)", "[100k,+inf)"]
EVENT_TABLES = ("gift", "click", "comment", "like", "room", "segments")


PROFILES: dict[str, dict] = {
    # Short histories and a strong planted topic signal: the kind case.
    "default": {},
    # Real gifting logs look more like this: tens of gifted streamers per gifter in a window,
    # many streamers per user, flatter popularity, and a next day dominated by first gifts.
    # (Seed 0: median 30 gifted streamers per gifter in 14 days, 90% of the next day's pairs
    # are first gifts; explore Recall@50 of popularity 0.17, of item-cosine co-gifting 0.29.)
    "long_history": {"users": 8_000, "streamers": 12_000, "topics": 12, "gifter_share": 0.15,
                     "gift_rate": 0.5, "favourite_share": 0.03, "zipf_exponent": 1.2,
                     "repeat_avoidance": 0.95, "propensity_sigma": 0.8, "click_ratio": 10.0},
    # Browsing clicks carry no interest signal (popularity only): watching tells no more
    # about a user's next gifts than the gifts do.
    "weak_clicks": {"click_topic_share": 0.0, "favourite_click_share": 0.0},
}
"""Named shapes of data (`generate --profile`); explicit settings override a profile's."""
# long_history's events without the segments table: logs of gifts and clicks only, as many
# platforms' are (and the public datasets converted to this layout).
PROFILES["no_content"] = {**PROFILES["long_history"], "content": False}
# no_content at the size of the public dataset the expansion-quality issue was measured on:
# 2,000 users (about 300 gifters, 40 gifted streamers each), 17,000 streamers. Few label
# nodes a night for the fused ranking, and many more streamers than users.
PROFILES["few_users"] = {**PROFILES["no_content"], "users": 2_000, "streamers": 17_000}


class GenConfig(BaseModel):
    """Size and shape of the synthetic world; defaults give a small demo dataset."""

    model_config = ConfigDict(extra="forbid")

    profile: Literal["default", "long_history", "weak_clicks", "no_content",
                     "few_users"] = "default"
    users: int = Field(20_000, ge=1)
    streamers: int = Field(2_000, ge=1)
    days: int = Field(15, ge=1)
    start: str = Field("2025-05-01", description="first day (UTC), YYYY-MM-DD")
    seed: int = 0
    format: Literal["csv", "parquet"] = "parquet"
    gifts_per_day: int | None = Field(None, ge=1, description="default: users * gift_rate")
    gift_rate: float = Field(0.05, gt=0, description="gifts per user per day by default")
    click_ratio: float = Field(20.0, ge=1, description="clicks per gift (gift clicks included)")
    comment_ratio: float = Field(3.0, ge=0, description="comments per gift")
    like_ratio: float = Field(5.0, ge=0, description="likes per gift")
    topics: int = Field(8, ge=1, description="latent interest topics")
    cross_topic_share: float = Field(0.15, ge=0, le=1,
                                     description="share of choices made outside the user's topics")
    gifter_share: float = Field(0.12, gt=0, le=1, description="users who gift in the period")
    favourite_share: float = Field(0.8, ge=0, le=1,
                                   description="gifts that go to one of the gifter's favourites")
    favourite_click_share: float = Field(0.3, ge=0, le=1,
                                         description="a gifter's clicks that go to a favourite")
    click_topic_share: float = Field(
        1.0, ge=0, le=1, description="browsing clicks that follow the user's topics; the rest "
                                     "go to streamers drawn by popularity alone (no signal)")
    repeat_avoidance: float = Field(
        0.0, ge=0, le=1, description="chance that an explored gift landing on a streamer the "
                                     "user already gifted is drawn again (novelty seeking)")
    propensity_sigma: float = Field(1.2, ge=0, description="lognormal sigma of how much "
                                    "gifters gift")
    zipf_exponent: float = Field(1.0, gt=0, description="streamer popularity ~ 1 / rank^a")
    activity_sigma: float = Field(1.0, ge=0, description="lognormal sigma of user activity")
    new_streamer_share: float = Field(0.3, ge=0, le=1,
                                      description="streamers whose debut falls after day 0")
    new_boost: float = Field(4.0, ge=1, description="popularity boost of a newly debuted streamer")
    new_boost_days: int = Field(3, ge=0, description="days the boost lasts after the debut")
    live_prob: float = Field(0.6, gt=0, le=1, description="chance a debuted streamer is live")
    second_room_prob: float = Field(0.3, ge=0, le=1,
                                    description="chance a live streamer opens a second room")
    segment_minutes: int = Field(30, ge=1, description="one segment per this much live time")
    max_segments_per_room: int = Field(8, ge=1)
    content: bool = Field(True, description="write the segments table (the streams' "
                                            "multi-modal content); false: the same events "
                                            "without it")
    modality_dims: dict[str, int] = Field(
        default_factory=lambda: {"image": 32, "speech": 16, "comment": 16})
    modality_noise: dict[str, float] = Field(
        default_factory=lambda: {"image": 1.0, "speech": 2.0, "comment": 3.0},
        description="per-segment noise sigma; topic centroids have unit variance per dim")
    style_sigma: float = Field(2.0, ge=0, description="a streamer's own offset from its topic")
    profile_signal: float = Field(0.3, ge=0, le=1,
                                  description="chance a profile column follows the topic")

    @model_validator(mode="before")
    @classmethod
    def _apply_profile(cls, data):
        if isinstance(data, dict) and data.get("profile", "default") in PROFILES:
            return {**PROFILES[data.get("profile", "default")], **data}
        return data

    @field_validator("start")
    @classmethod
    def _valid_start(cls, v: str) -> str:
        parse_date(v)
        return v

    @field_validator("users", "streamers")
    @classmethod
    def _fits_id_range(cls, v: int) -> int:
        # BadInputError, not ValueError: it reaches the command line as exit code 2.
        if v > STREAMER_ID_BASE - USER_ID_BASE:
            raise BadInputError(f"at most {STREAMER_ID_BASE - USER_ID_BASE:,} users and "
                                f"streamers fit the generated id ranges, got {v:,}")
        return v

    @model_validator(mode="after")
    def _valid_modalities(self) -> "GenConfig":
        for name, d in (("modality_dims", self.modality_dims),
                        ("modality_noise", self.modality_noise)):
            if set(d) != set(MODALITIES):
                raise ValueError(f"{name} must have exactly the keys {list(MODALITIES)}")
        if min(self.modality_dims.values()) < 1 or min(self.modality_noise.values()) < 0:
            raise ValueError("modality dims must be >= 1 and noise >= 0")
        return self

    @property
    def start_ms(self) -> int:
        day = parse_date(self.start)
        return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
                   .timestamp() * 1000)

    @property
    def daily_gifts(self) -> int:
        return self.gifts_per_day or max(1, round(self.users * self.gift_rate))


# ---------------------------------------------------------------------------------------------
# The population: drawn once, held in memory (a few arrays per user and per streamer)
# ---------------------------------------------------------------------------------------------
class World:
    """Latent truth of users and streamers; also the state the day loop fills in."""

    def __init__(self, cfg: GenConfig, rng: np.random.Generator):
        U, S, T = cfg.users, cfg.streamers, cfg.topics
        self.cfg = cfg
        # Users: P(main) = w_main, P(second) = 1 - cross - w_main, P(any topic) = cross.
        self.u_main = rng.integers(0, T, U)
        self.u_second = (self.u_main + rng.integers(1, T, U)) % T if T > 1 else self.u_main
        self.u_w_main = (1 - cfg.cross_topic_share) * rng.uniform(0.55, 0.85, U)
        self.u_activity = rng.lognormal(0, cfg.activity_sigma, U)
        # Active users are likelier to gift, but most users never do.
        root = np.sqrt(self.u_activity)
        self.u_gifter = rng.random(U) < np.minimum(1.0, cfg.gifter_share * root / root.mean())
        self.gifters = np.flatnonzero(self.u_gifter)
        G = len(self.gifters)
        self.g_propensity = rng.lognormal(0, cfg.propensity_sigma, G) * root[self.gifters]
        self.g_price_mu = rng.normal(np.log(5), 1.0, G)
        self.g_nfav = np.minimum(rng.geometric(0.5, G), MAX_FAVOURITES)
        self.u_gifter_idx = np.full(U, -1)
        self.u_gifter_idx[self.gifters] = np.arange(G)

        # Streamers: topic, Zipf popularity over a random rank, debut day.
        self.s_topic = rng.integers(0, T, S)
        self.s_pop = 1.0 / (rng.permutation(S) + 1.0) ** cfg.zipf_exponent
        self.s_new = (rng.random(S) < cfg.new_streamer_share) & (cfg.days > 1)
        self.s_debut = np.where(self.s_new, rng.integers(1, max(cfg.days, 2), S), 0)
        # Veterans went live before the period; new streamers' first live is set on debut.
        self.s_first_live = np.where(
            self.s_new, -1, cfg.start_ms - rng.integers(1, 1000, S) * DAY_MS
            - rng.integers(0, DAY_MS, S))
        self.style = {m: (rng.normal(size=(T, d))[self.s_topic]
                          + cfg.style_sigma * rng.normal(size=(S, d))).astype(np.float32)
                      for m, d in cfg.modality_dims.items()}
        # Favourites of gifters come from the streamers live since day 0.
        veterans = np.flatnonzero(self.s_debut == 0)
        veterans = Pool.of(self, veterans if len(veterans) else np.arange(S), np.ones(S))
        fav_users = np.repeat(self.gifters, MAX_FAVOURITES)
        self.g_fav = veterans.pick(rng, fav_users).reshape(G, MAX_FAVOURITES)
        self.gifted = np.zeros(0, np.int64)     # user * S + streamer of past gifts (sorted)

    def topics_of(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        """One topic per event, from each user's topic mixture."""
        u = rng.random(len(users))
        cross = rng.integers(0, self.cfg.topics, len(users))
        return np.where(u < self.u_w_main[users], self.u_main[users],
                        np.where(u < 1 - self.cfg.cross_topic_share, self.u_second[users], cross))


class Pool:
    """Streamers to choose from, grouped by topic, sampled by weight with one searchsorted."""

    def __init__(self, world: World, ids: np.ndarray, weights: np.ndarray):
        T = world.cfg.topics
        order = np.argsort(world.s_topic[ids], kind="stable")
        self.world = world
        self.ids = ids[order]
        self.cum = np.cumsum(weights[order])
        topic = world.s_topic[self.ids]
        first = np.searchsorted(topic, np.arange(T))
        last = np.searchsorted(topic, np.arange(T), side="right")
        before = np.concatenate([[0.0], self.cum])
        self.start, self.mass = before[first], before[last] - before[first]
        self.total = before[-1]

    @classmethod
    def of(cls, world: World, ids: np.ndarray, boost: np.ndarray) -> "Pool":
        return cls(world, ids, world.s_pop[ids] * boost[ids])

    def pick(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        """A streamer per user event: topic from the user's mixture, then by popularity."""
        topic = self.world.topics_of(rng, users)
        r = rng.random(len(users))
        mass = self.mass[topic]
        # A topic with nobody live falls back to the whole pool.
        target = np.where(mass > 0, self.start[topic] + r * mass, r * self.total)
        idx = np.minimum(np.searchsorted(self.cum, target, side="right"), len(self.ids) - 1)
        return self.ids[idx]

    def pick_popular(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n streamers by popularity alone, whatever the users' topics."""
        idx = np.searchsorted(self.cum, rng.random(n) * self.total, side="right")
        return self.ids[np.minimum(idx, len(self.ids) - 1)]


# ---------------------------------------------------------------------------------------------
# One day of events
# ---------------------------------------------------------------------------------------------
def _rooms(world: World, rng: np.random.Generator, day: int, day_ms: int) -> dict:
    """Live streamers of the day and their rooms (1-2 non-overlapping rooms each)."""
    cfg, S = world.cfg, world.cfg.streamers
    debuted = world.s_debut <= day
    live = debuted & ((rng.random(S) < cfg.live_prob) | (world.s_debut == day))
    streamers = np.flatnonzero(live)
    n_rooms = 1 + (rng.random(len(streamers)) < cfg.second_room_prob)
    owner = np.repeat(streamers, n_rooms)
    first = np.cumsum(n_rooms) - n_rooms
    slot = np.repeat(DAY_MS // n_rooms, n_rooms)
    k = np.arange(len(owner)) - np.repeat(first, n_rooms)
    start = day_ms + k * slot + (rng.random(len(owner)) * slot * 0.5).astype(np.int64)
    duration = rng.lognormal(np.log(2 * 60 * MINUTE_MS), 0.5, len(owner)).astype(np.int64)
    end = np.minimum(start + np.maximum(duration, 10 * MINUTE_MS), day_ms + (k + 1) * slot)
    pos = np.full(S, -1)
    pos[streamers] = np.arange(len(streamers))
    return {"streamers": streamers, "n_rooms": n_rooms, "first": first, "pos": pos,
            "owner": owner, "start": start, "end": end}


def _place(rng: np.random.Generator, rooms: dict, streamers: np.ndarray) -> np.ndarray:
    """A room (index into the day's rooms) of each event's streamer, uniformly."""
    p = rooms["pos"][streamers]
    return rooms["first"][p] + (rng.random(len(p)) * rooms["n_rooms"][p]).astype(np.int64)


def _choose(world: World, rng: np.random.Generator, pool: Pool, rooms: dict,
            users: np.ndarray, favourite_share: float) -> tuple[np.ndarray, np.ndarray]:
    """Streamer of each event: a gifter's live favourite (repeats), else explored in the pool.
    Returns (streamers, explored mask)."""
    explored = pool.pick(rng, users)
    if len(world.gifters) == 0:
        return explored, np.ones(len(users), bool)
    gi = world.u_gifter_idx[users]
    chosen = np.where((gi >= 0) & (rng.random(len(gi)) < favourite_share), -1, explored)
    for _ in range(2):  # a favourite off air today: try another one, then explore
        fav = world.g_fav[gi, (rng.random(len(gi)) * world.g_nfav[gi]).astype(np.int64)]
        chosen = np.where((chosen == -1) & (rooms["pos"][fav] >= 0), -2 - fav, chosen)
    is_favourite = chosen <= -2
    chosen = np.where(is_favourite, -2 - chosen, chosen)
    return np.where(chosen < 0, explored, chosen), ~is_favourite


def _avoid_repeats(world: World, rng: np.random.Generator, pool: Pool, users: np.ndarray,
                   streamers: np.ndarray, explored: np.ndarray) -> np.ndarray:
    """Novelty seeking: explored gifts to an already gifted streamer are drawn again (up to
    three times), each with probability `repeat_avoidance`. Favourites stay repeats."""
    streamers = streamers.copy()
    for _ in range(3):
        again = explored & np.isin(users * world.cfg.streamers + streamers, world.gifted)
        again &= rng.random(len(users)) < world.cfg.repeat_avoidance
        if not again.any():
            break
        streamers[again] = pool.pick(rng, users[again])
    return streamers


def _poisson_events(rng: np.random.Generator, who: np.ndarray, weight: np.ndarray,
                    total: float) -> np.ndarray:
    """Repeat each id by a Poisson count with mean proportional to its weight."""
    if total <= 0 or len(who) == 0:
        return np.zeros(0, np.int64)
    return np.repeat(who, rng.poisson(total * weight / weight.sum()))


def _day(world: World, rng: np.random.Generator, day: int) -> tuple[dict[str, pa.Table], tuple]:
    """Tables of one day, and (streamers debuting today, their first room start)."""
    cfg = world.cfg
    day_ms = cfg.start_ms + day * DAY_MS
    rooms = _rooms(world, rng, day, day_ms)
    # At most two rooms per streamer a day: ids never collide and need no running counter.
    live_ids = LIVE_ID_BASE + day * 2 * cfg.streamers + np.arange(len(rooms["owner"]))
    fresh = world.s_new & (day - world.s_debut >= 0) & (day - world.s_debut < cfg.new_boost_days)
    pool = Pool.of(world, rooms["streamers"], np.where(fresh, cfg.new_boost, 1.0))
    rs, re = rooms["start"], rooms["end"]

    # Tiny worlds may have a day with nobody live: a day without events.
    scale = 1.0 if len(rooms["streamers"]) else 0.0
    g_users = _poisson_events(rng, world.gifters, world.g_propensity, scale * cfg.daily_gifts)
    gi = world.u_gifter_idx[g_users]
    g_streamers, g_explored = _choose(world, rng, pool, rooms, g_users, cfg.favourite_share)
    if cfg.repeat_avoidance > 0:
        g_streamers = _avoid_repeats(world, rng, pool, g_users, g_streamers, g_explored)
        # Days are drawn one at a time (in order), so day d+1 sees day d's gifts here.
        world.gifted = np.union1d(world.gifted, g_users * cfg.streamers + g_streamers)
    g_room = _place(rng, rooms, g_streamers)
    g_ts = rs[g_room] + GIFT_LEAD_MS + (rng.random(len(g_room))
                                        * (re[g_room] - rs[g_room] - GIFT_LEAD_MS)).astype(np.int64)
    price = np.exp(world.g_price_mu[gi] + 1.2 * rng.normal(size=len(gi)))
    price = np.clip(np.rint(price), 1, 100_000).astype(np.int64)

    # The click that precedes each gift: same user and room, up to 5 minutes before.
    gap_max = np.minimum(MAX_CLICK_TO_GIFT_MS, g_ts - rs[g_room])
    gc_ts = g_ts - 1000 - (rng.random(len(g_ts)) * (gap_max - 1000)).astype(np.int64)
    gc_watch = (g_ts - gc_ts) + (rng.random(len(g_ts)) * (re[g_room] - g_ts)).astype(np.int64)

    # Browsing clicks of all users, by activity, with the same topic/popularity affinities.
    n_browse = scale * cfg.daily_gifts * (cfg.click_ratio - 1)
    b_users = _poisson_events(rng, np.arange(cfg.users), world.u_activity, n_browse)
    b_streamers, _ = _choose(world, rng, pool, rooms, b_users, cfg.favourite_click_share)
    if cfg.click_topic_share < 1:      # clicks that carry no interest signal, popularity only
        blind = rng.random(len(b_users)) >= cfg.click_topic_share
        b_streamers[blind] = pool.pick_popular(rng, int(blind.sum()))
    b_room = _place(rng, rooms, b_streamers)
    b_ts = rs[b_room] + (rng.random(len(b_room)) * (re[b_room] - rs[b_room])).astype(np.int64)
    b_watch = rng.lognormal(np.log(3 * MINUTE_MS), 1.2, len(b_room)).astype(np.int64)
    b_watch = np.clip(b_watch, 1000, np.maximum(re[b_room] - b_ts, 1000))

    c_users = np.concatenate([g_users, b_users])
    c_room = np.concatenate([g_room, b_room])
    c_ts = np.concatenate([gc_ts, b_ts])
    c_watch = np.concatenate([gc_watch, b_watch])

    def interactions(users, room, ts, extra: dict | None = None) -> dict:
        # Rows stay in generation order (grouped by user): like an unsorted log partition,
        # and sorting would cost a quarter of the run time.
        return {"user_id": USER_ID_BASE + users, "live_id": live_ids[room],
                "streamer_id": STREAMER_ID_BASE + rooms["owner"][room], "timestamp": ts,
                **(extra or {})}

    def during_clicks(ratio: float) -> dict:
        """Comments and likes happen while watching a clicked room: same affinities."""
        n = rng.poisson(cfg.daily_gifts * ratio) if len(c_ts) else 0
        pick = rng.integers(0, len(c_ts), n) if n else np.zeros(0, np.int64)
        ts = c_ts[pick] + (rng.random(n) * c_watch[pick]).astype(np.int64)
        ts = np.minimum(ts, re[c_room[pick]] - 1)
        return interactions(c_users[pick], c_room[pick], ts)

    debut = world.s_new[rooms["streamers"]] & (world.s_debut[rooms["streamers"]] == day)
    debuts = (rooms["streamers"][debut], rs[rooms["first"][debut]])
    out = {
        "gift": interactions(g_users, g_room, g_ts, {"gift_price": price}),
        "click": interactions(c_users, c_room, c_ts, {"watch_live_time": c_watch}),
        "comment": during_clicks(cfg.comment_ratio),
        "like": during_clicks(cfg.like_ratio),
        "room": _room_table(world, rng, rooms, live_ids, day_ms),
        "segments": _segments(world, rng, rooms, live_ids),
    }
    return {name: _table(name, cols) for name, cols in out.items()}, debuts


def _room_table(world: World, rng: np.random.Generator, rooms: dict, live_ids: np.ndarray,
                day_ms: int) -> dict:
    owner, n = rooms["owner"], len(rooms["owner"])
    date = dt.datetime.fromtimestamp(day_ms / 1000, dt.timezone.utc)
    category = _topical(rng, world.s_topic[owner], world.cfg.topics, world.cfg.profile_signal)
    order = np.argsort(rooms["start"], kind="stable")
    cols = {
        "p_date": np.full(n, int(date.strftime("%Y%m%d"))), "live_id": live_ids,
        "streamer_id": STREAMER_ID_BASE + owner, "live_type": rng.integers(0, 3, n),
        "start_timestamp": rooms["start"], "end_timestamp": rooms["end"],
        "live_content_category": np.array([f"category_{t}" for t in range(world.cfg.topics)],
                                          dtype=object)[category],
        "live_name_id": rng.integers(1, 10_000_000, n),
    }
    return {k: v[order] for k, v in cols.items()}


def _segments(world: World, rng: np.random.Generator, rooms: dict,
              live_ids: np.ndarray) -> dict:
    cfg = world.cfg
    step = cfg.segment_minutes * MINUTE_MS
    length = rooms["end"] - rooms["start"]
    n_seg = np.clip(-(-length // step), 1, cfg.max_segments_per_room)
    room = np.repeat(np.arange(len(n_seg)), n_seg)
    k = np.arange(len(room)) - np.repeat(np.cumsum(n_seg) - n_seg, n_seg)
    owner = rooms["owner"][room]
    cols = {"streamer_id": STREAMER_ID_BASE + owner, "live_id": live_ids[room],
            "timestamp": rooms["start"][room] + k * step}
    for m in MODALITIES:
        vec = world.style[m][owner] + np.float32(cfg.modality_noise[m]) * rng.standard_normal(
            (len(room), cfg.modality_dims[m]), dtype=np.float32)
        # 5 decimals keep the CSV short; float32 text round-trips exactly in both formats.
        cols[f"{m}_emb"] = np.round(vec, 5)
    return cols


def _topical(rng: np.random.Generator, topic: np.ndarray, n_values: int,
             signal: float) -> np.ndarray:
    """A categorical index that equals topic % n_values with probability `signal`."""
    noise = rng.integers(0, n_values, len(topic))
    return np.where(rng.random(len(topic)) < signal, topic % n_values, noise)


# ---------------------------------------------------------------------------------------------
# Profiles and truth (written once, after the days: first_live_timestamp is known then)
# ---------------------------------------------------------------------------------------------
def _pick(rng: np.random.Generator, values: list[str], idx: np.ndarray | int) -> pa.Array:
    """values[idx] as an Arrow string array (`idx` = a count: uniform at random)."""
    if isinstance(idx, int):
        idx = rng.integers(0, len(values), idx)
    return pa.array(values, pa.string()).take(pa.array(idx))


def _bucket(x: np.ndarray, n: int) -> np.ndarray:
    """Quantile bucket 0..n-1 of each value (count ranges follow activity or popularity)."""
    ranks = np.argsort(np.argsort(x, kind="stable"), kind="stable")
    return np.minimum(ranks * n // max(len(x), 1), n - 1)


def _profile_common(rng: np.random.Generator, topic: np.ndarray, signal: float,
                    start_ms: int) -> dict:
    n = len(topic)
    cols = {
        "gender": _pick(rng, GENDERS, n),
        "age": _pick(rng, AGES, _topical(rng, topic, len(AGES), signal)),
        "country": _pick(rng, COUNTRIES, n),
        "device_brand": _pick(rng, BRANDS, n),
        "device_price": _pick(rng, DEVICE_PRICES, n),
        "reg_timestamp": start_ms - rng.integers(DAY_MS, 5 * 365 * DAY_MS, n),
    }
    cols["onehot_feat0"] = _topical(rng, topic, 10, signal)
    for i in range(1, 7):
        cols[f"onehot_feat{i}"] = rng.integers(0, 2 + 3 * i, n)
    return cols


def _profiles(world: World, rng: np.random.Generator) -> dict[str, pa.Table]:
    cfg = world.cfg
    user = {"user_id": USER_ID_BASE + np.arange(cfg.users)}
    user.update(_profile_common(rng, world.u_main, cfg.profile_signal, cfg.start_ms))
    user["fans_num"] = _pick(rng, COUNT_RANGES, _bucket(world.u_activity, 3))
    user["follow_num"] = _pick(rng, COUNT_RANGES, _bucket(world.u_activity, 4))
    user["is_live_streamer"] = (rng.random(cfg.users) < 0.02).astype(np.int64)
    streamer = {"streamer_id": STREAMER_ID_BASE + np.arange(cfg.streamers)}
    streamer.update(_profile_common(rng, world.s_topic, cfg.profile_signal, cfg.start_ms))
    tags = [f"tag_{t:02d}" for t in range(max(cfg.topics, 10))]
    streamer["live_operation_tag"] = _pick(
        rng, tags, _topical(rng, world.s_topic, len(tags), cfg.profile_signal))
    streamer["fans_user_num"] = _pick(rng, COUNT_RANGES, _bucket(world.s_pop, len(COUNT_RANGES)))
    streamer["first_live_timestamp"] = world.s_first_live
    return {"user": _table("user", user), "streamer": _table("streamer", streamer)}


def _truth(world: World) -> dict[str, pa.Table]:
    cfg = world.cfg
    start = parse_date(cfg.start)
    users = pa.table({
        "user_id": USER_ID_BASE + np.arange(cfg.users),
        "topic": world.u_main, "second_topic": world.u_second,
        "main_weight": world.u_w_main, "activity": world.u_activity,
        "is_gifter": world.u_gifter,
    })
    n_fav = np.zeros(cfg.users, np.int64)
    n_fav[world.gifters] = world.g_nfav
    kept = np.arange(MAX_FAVOURITES)[None, :] < world.g_nfav[:, None]
    offsets = np.concatenate([[0], np.cumsum(n_fav)]).astype(np.int32)
    users = users.append_column("favourites", pa.ListArray.from_arrays(
        offsets, pa.array(STREAMER_ID_BASE + world.g_fav[kept], pa.int64())))
    streamers = pa.table({
        "streamer_id": STREAMER_ID_BASE + np.arange(cfg.streamers),
        "topic": world.s_topic, "popularity": world.s_pop,
        "debut_day": world.s_debut,
        "debut_date": (np.datetime64(start) + world.s_debut).astype(str),
    })
    return {"users": users, "streamers": streamers}


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _table(name: str, cols: dict) -> pa.Table:
    schema = RAW_TABLES[name]
    arrays = []
    for f in schema:
        v = cols[f.name]
        if pa.types.is_list(f.type):
            flat = pa.array(np.ascontiguousarray(v).reshape(-1), pa.float32())
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, v.shape[1]).cast(f.type))
        else:
            arrays.append(v if isinstance(v, pa.Array) else pa.array(v, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _as_csv(table: pa.Table) -> pa.Table:
    """Vectors become one string of space-separated floats (shortest float32 round-trip)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_list(f.type):
            text = pc.binary_join(table.column(i).cast(pa.list_(pa.string())), " ")
            table = table.set_column(i, pa.field(f.name, pa.string()), text)
    return table


class _Writers:
    """One open file per table, appended chunk by chunk."""

    def __init__(self, folder: Path, fmt: str):
        self.folder, self.fmt = folder, fmt
        self.open: dict[str, object] = {}
        self.rows: dict[str, int] = {}

    def write(self, name: str, table: pa.Table) -> None:
        if self.fmt == "csv":
            table = _as_csv(table)
        if name not in self.open:
            path = self.folder / f"{name}.{self.fmt}"
            self.open[name] = (pacsv.CSVWriter(path, table.schema) if self.fmt == "csv"
                               else pq.ParquetWriter(path, table.schema, compression="snappy",
                                                     use_dictionary=self._strings(table)))
        self.open[name].write_table(table)
        self.rows[name] = self.rows.get(name, 0) + table.num_rows

    @staticmethod
    def _strings(table: pa.Table) -> list[str]:
        """Dictionary-encode only string columns: on ids and times it costs more than it saves."""
        return [f.name for f in table.schema if pa.types.is_string(f.type)]

    def close(self) -> None:
        for w in self.open.values():
            w.close()


def generate(out: str | Path, cfg: GenConfig) -> dict:
    """Write the dataset to `out` (published atomically, with _SUCCESS); return the manifest."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (
            any(out.iterdir()) and not (out / "manifest.json").is_file())):
        raise BadInputError(f"--out {out} exists and is not a generated dataset (no "
                            "manifest.json): refusing to replace it")
    t0 = time.perf_counter()
    seeds = np.random.SeedSequence(cfg.seed).spawn(cfg.days + 2)
    world = World(cfg, np.random.default_rng(seeds[0]))
    log.info("world: %d users (%d gifters), %d streamers (%d debut during the period), "
             "%d topics", cfg.users, len(world.gifters), cfg.streamers,
             int((world.s_debut > 0).sum()), cfg.topics)
    timings = {"world_s": time.perf_counter() - t0}
    with staged_output(out) as stage:
        writers = _Writers(stage, cfg.format)
        try:
            # Day d+1 is drawn in a thread while day d is written (numpy and Arrow release
            # the GIL), which keeps both cores busy.
            with ThreadPoolExecutor(1) as ahead:
                def draw(day):
                    return ahead.submit(_day, world, np.random.default_rng(seeds[day + 1]), day)

                next_day = draw(0)
                for day in progress(range(cfg.days), desc="generate days", unit="day"):
                    tables, (debuted, first_ts) = next_day.result()
                    if day + 1 < cfg.days:
                        next_day = draw(day + 1)
                    world.s_first_live[debuted] = first_ts
                    for name in EVENT_TABLES:
                        if name != "segments" or cfg.content:
                            writers.write(name, tables[name])
            for name, table in _profiles(world, np.random.default_rng(seeds[-1])).items():
                writers.write(name, table)
        finally:
            writers.close()
        timings["events_s"] = time.perf_counter() - t0 - timings["world_s"]
        (stage / "truth").mkdir()
        for name, table in _truth(world).items():
            pq.write_table(table, stage / "truth" / f"{name}.parquet")
        timings["total_s"] = time.perf_counter() - t0
        manifest = {
            "generator": "graphbuild.synthetic", "version": gie.__version__,
            "environment": environment.describe(),
            "seed": cfg.seed, "format": cfg.format, "config": cfg.model_dump(mode="json"),
            "start_ms": cfg.start_ms, "end_ms": cfg.start_ms + cfg.days * DAY_MS,
            "row_counts": dict(writers.rows),
            "files": {n: f"{n}.{cfg.format}" for n in writers.rows},
            "truth": ["truth/users.parquet", "truth/streamers.parquet"],
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
        write_json_atomic(stage / "manifest.json", manifest)
    log.info("wrote %s to %s in %.1fs: %s", cfg.format, out, timings["total_s"],
             ", ".join(f"{k}={v:,}" for k, v in writers.rows.items()))
    return manifest
