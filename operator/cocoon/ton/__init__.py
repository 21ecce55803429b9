"""TON settlement: the payment-channel contract's wire format, promise signing, chain access
(toncenter v2 HTTP or liteservers), a local emulator, settlement decisions and the CLI."""
