"""Everything that speaks Bitrix24: errors, the portal clients, the directory (users, departments),
the per-portal pace shared by every process."""
