"""The admin's pages inside Bitrix24: settings, dashboard, import, index, debug lookup."""
