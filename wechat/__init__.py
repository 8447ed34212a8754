"""The only code that speaks WeChat: crypto, signatures, XML, API clients and the emulator."""
