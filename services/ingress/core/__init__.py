"""The one mail API every dialect calls: directory lookups, the send command, its outcome. No wire
models and no aiohttp request here: a dialect maps its wire format to these and renders what comes back."""
