"""The write-up's helpers (writeup.ipynb): `report` reads the sweep and the results step's tables
and draws its figures; `narrative` says in sentences what they show."""
