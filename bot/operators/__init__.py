"""The operator inbox: accounts, sessions and the API through which humans take over chats."""
