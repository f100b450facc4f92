"""Staff tools for looking at emails before they go out: validate every step × segment, write
previews and screenshots, simulate a timeline, diff two versions of a campaign. Nothing here
sends or writes to the database."""
