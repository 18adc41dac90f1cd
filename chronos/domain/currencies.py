"""The currencies the ledger accepts: ISO 4217 alphabetic codes, and the one rule for them."""

from __future__ import annotations

# Active ISO 4217 codes (list 1, funds and precious metals excluded). A currency that is
# not here is rejected with a clear message rather than silently creating a new ledger.
ISO_4217_CODES = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD
    BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB
    EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK
    JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA
    MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK
    PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN
    SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV
    WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
    """.split()
)


def currency_problem(currency: str) -> str | None:
    """Why ``currency`` is not one the ledger accepts, or None if it is.

    The one currency rule: commands and queries both check a code with it.
    """
    if len(currency) != 3 or not currency.isascii() or not currency.isupper():
        return f"must be a 3-letter ISO 4217 code, got {currency[:16]!r}"
    if currency not in ISO_4217_CODES:
        return f"{currency!r} is not an ISO 4217 currency"
    return None
