"""CarData: the backend serves third parties the way BMW CarData does (issue 16).

The owner of a vehicle (a backend account, known here by its gcid) consents to a third party (a
registered client) receiving chosen keys of the vehicle's data; the client reads the last transmitted
values over REST, or receives them streamed and pushed over MQTT; the owner sees what is stored and
what went to whom. The seed is `cardata.de.txt`; the interface is BMW's published customer API.

Map of the package:

- `catalogue.py` + `catalogue.toml`  our CarData keys (BMW's names and categories), each filled from a
                                     VSS signal or a vehicle event; `expand` keys/categories
- `errors.py`                        CardataError and BadRequest, Unauthorized, Forbidden, NotFound,
                                     Conflict (`code`: the CustomerErrorResponse's exveErrorId)
- `records.py`                       Client, Container, Transfer; limits and checks of names
- `consents.py`                      CardataStore: gcids, clients, consents (tied to the account link),
                                     containers, the transfer log
- `capability.py`                    the capability service: per VIN and key, available now and how often
- `service.py`                       CardataService: the facade the HTTP layer calls
- `reports.py`                       the data report and the transaction report, JSON and HTML
- `timestamps.py`                    ISO 8601 UTC "Z" times
- `oauth.py`, `tokens.py`, `id_token.py`, `oauth_errors.py`   device-code sign-in with PKCE, tokens
- `http_app.py`, `customer_routes.py`, `oauth_routes.py`, `owner_routes.py`, `http_*.py`,
  `body_limit.py`, `server.py`       the FastAPI app and its uvicorn server
- `streaming.py`, `stream_message.py`, `stream_rate.py`, `push.py`   MQTT streaming and push
"""
