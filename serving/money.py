"""Money on the request path: integer pico-dollars (10^-12 USD).

Prices have at most 6 decimal places per million tokens (ModelVersion), so a price per token is an
integer number of pico-dollars and every cost is exact integer arithmetic: no Decimal context, no
rounding until Redis (nano-dollars, rounded up so it never under-counts) and the ledger's text.
"""

from __future__ import annotations

from decimal import Decimal

PICO_PER_NANO = 1000
PICO_PER_USD = 10**12


def price_pico(price_per_mtok: Decimal) -> int:
    """USD per million tokens → pico-dollars per token (exact for up to 6 decimal places)."""
    pico = price_per_mtok * 1_000_000
    if pico != pico.to_integral_value():
        raise ValueError(f"price {price_per_mtok} has more than 6 decimal places")
    return int(pico)


def nano_from_pico(pico: int) -> int:
    """Rounded up, so Redis never under-counts."""
    return -(-pico // PICO_PER_NANO)


def usd_text(pico: int) -> str:
    """Exact decimal text of a pico-dollar amount, without trailing zeros ("0.0000024")."""
    whole, frac = divmod(pico, PICO_PER_USD)
    text = f"{frac:012d}".rstrip("0")
    return f"{whole}.{text}" if text else str(whole)


def usd(pico: int) -> Decimal:
    return Decimal(pico).scaleb(-12)
