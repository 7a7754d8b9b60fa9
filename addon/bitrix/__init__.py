"""The Bitrix24 adapter: the only code that speaks Bitrix24 (its pace per portal, for now)."""
