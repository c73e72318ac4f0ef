"""Chemical element symbols and atomic numbers."""

from __future__ import annotations

SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb "
    "Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf "
    "Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split()
ATOMIC_NUMBERS = {symbol: number for number, symbol in enumerate(SYMBOLS) if number > 0}


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol ('C' -> 6); a clear error for anything else."""
    try:
        return ATOMIC_NUMBERS[symbol.strip().capitalize()]
    except KeyError:
        raise ValueError(f"unknown element symbol {symbol!r}; use a symbol such as H, C, N, O") from None


def symbol(number: int) -> str:
    if not 0 < number < len(SYMBOLS):
        raise ValueError(f"no element has atomic number {number}")
    return SYMBOLS[number]


def symbols(numbers) -> list[str]:
    return [symbol(int(n)) for n in numbers]
