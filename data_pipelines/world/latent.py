"""The shared latent interest space of users, authors, short videos and live rooms."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_pipelines.world.config import WorldConfig

# Relative activity of each hour of the day (00h..23h): quiet nights, an evening peak.
DIURNAL_WEIGHTS = np.array(
    [0.5, 0.3, 0.2, 0.15, 0.15, 0.2, 0.35, 0.6, 0.8, 0.9, 0.9, 1.0,
     1.1, 1.0, 0.9, 0.9, 1.0, 1.1, 1.3, 1.6, 1.9, 2.0, 1.7, 1.0]
)


@dataclass(frozen=True)
class Population:
    """Everyone and everything in the world, except rooms (see `rooms.py`).

    Latent vectors are [N, latent_dim]; content embeddings are [N, content_emb_dim].
    Authors [0, n_live_authors) go live; every author posts short videos.
    """

    category_centers: np.ndarray  # [C, d]
    projection: np.ndarray  # [d, E], latent -> content-embedding space
    author_latent: np.ndarray  # [A, d]
    author_category: np.ndarray  # [A]
    author_log_popularity: np.ndarray  # [A]
    author_habit_hour: np.ndarray  # [A] hour of day a live author usually starts streaming
    photo_author: np.ndarray  # [P]
    photo_latent: np.ndarray  # [P, d]
    photo_duration_ms: np.ndarray  # [P]
    photo_embedding: np.ndarray  # [P, E] float32
    user_latent: np.ndarray  # [U, d]
    user_activity: np.ndarray  # [U] mean 1, lognormal: a long tail of light users
    user_live_preference: np.ndarray  # [U] mean 1, scales the user's live share
    user_gift_propensity: np.ndarray  # [U] 0 for non-gifters
    user_age_group: np.ndarray  # [U]
    user_gender: np.ndarray  # [U]

    @property
    def n_users(self) -> int:
        return len(self.user_latent)


def _unit_noise(rng: np.random.Generator, shape: tuple[int, ...], dim: int) -> np.ndarray:
    """Gaussian noise whose rows have expected squared norm 1."""
    return rng.standard_normal(shape) / np.sqrt(dim)


def embed(population_projection: np.ndarray, latent: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Content embedding of items: a projection of the latent vector plus noise, as float32."""
    emb_dim = population_projection.shape[1]
    clean = latent @ population_projection
    return (clean + noise * _unit_noise(rng, clean.shape, emb_dim)).astype(np.float32)


def build_population(cfg: WorldConfig, rng: np.random.Generator) -> Population:
    d, n_cat = cfg.latent_dim, cfg.n_categories
    centers = _unit_noise(rng, (n_cat, d), d)
    # An orthonormal projection keeps embedding dot products close to latent dot products.
    emb_dim = cfg.content_emb_dim
    if emb_dim >= d:  # [d, E] with orthonormal rows
        q, _ = np.linalg.qr(rng.standard_normal((emb_dim, d)))
        projection = np.ascontiguousarray(q.T)
    else:  # [d, E] with orthonormal columns: the best a smaller space can do
        projection, _ = np.linalg.qr(rng.standard_normal((d, emb_dim)))

    # Category sizes are skewed: a few big categories, a tail of niche ones (fishing...).
    category_weights = 1.0 / np.arange(1, n_cat + 1) ** 0.8
    category_weights /= category_weights.sum()
    author_category = rng.choice(n_cat, size=cfg.n_authors, p=category_weights)
    author_latent = centers[author_category] + 0.5 * _unit_noise(rng, (cfg.n_authors, d), d)
    author_log_popularity = rng.normal(0.0, 1.0, size=cfg.n_authors)
    hour_weights = DIURNAL_WEIGHTS**2 / (DIURNAL_WEIGHTS**2).sum()  # streamers favour the evening
    author_habit_hour = rng.choice(24, size=cfg.n_authors, p=hour_weights) + rng.random(cfg.n_authors)

    author_weights = np.exp(author_log_popularity)
    photo_author = rng.choice(cfg.n_authors, size=cfg.n_photos, p=author_weights / author_weights.sum())
    # Every author posts at least one short video, so live authors always have short-video history.
    photo_author[: min(cfg.n_authors, cfg.n_photos)] = np.arange(min(cfg.n_authors, cfg.n_photos))
    photo_latent = author_latent[photo_author] + 0.3 * _unit_noise(rng, (cfg.n_photos, d), d)
    sf = cfg.short_feedback
    photo_duration_ms = np.clip(
        np.exp(np.log(sf.duration_median_s * 1000) + sf.duration_sigma * rng.standard_normal(cfg.n_photos)),
        3_000, 600_000,
    ).astype(np.int64)
    photo_embedding = embed(projection, photo_latent, cfg.content_emb_noise, rng)

    # Users mix two interests, the first dominant.
    first = rng.choice(n_cat, size=cfg.n_users, p=category_weights)
    second = rng.choice(n_cat, size=cfg.n_users, p=category_weights)
    user_latent = 0.85 * centers[first] + 0.5 * centers[second] + 0.4 * _unit_noise(rng, (cfg.n_users, d), d)
    sigma = cfg.activity_sigma
    user_activity = np.exp(rng.normal(-sigma**2 / 2, sigma, size=cfg.n_users))
    live_sigma = cfg.live_preference_sigma
    user_live_preference = np.exp(rng.normal(-live_sigma**2 / 2, live_sigma, size=cfg.n_users))
    is_gifter = rng.random(cfg.n_users) < cfg.live_feedback.gifter_share
    user_gift_propensity = np.where(is_gifter, np.exp(rng.normal(-0.5, 1.0, size=cfg.n_users)), 0.0)
    return Population(
        category_centers=centers,
        projection=projection,
        author_latent=author_latent,
        author_category=author_category,
        author_log_popularity=author_log_popularity,
        author_habit_hour=author_habit_hour,
        photo_author=photo_author,
        photo_latent=photo_latent,
        photo_duration_ms=photo_duration_ms,
        photo_embedding=photo_embedding,
        user_latent=user_latent,
        user_activity=user_activity,
        user_live_preference=user_live_preference,
        user_gift_propensity=user_gift_propensity,
        user_age_group=rng.integers(0, 7, size=cfg.n_users),
        user_gender=rng.integers(0, 2, size=cfg.n_users),
    )
