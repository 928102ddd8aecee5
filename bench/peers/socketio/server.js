// Socket.IO peer for natter-bench: what many teams run instead of a durable messaging server.
//
// Rooms, acknowledgements, nothing persisted. One Node.js process (one core at most).
//   node server.js [PORT]      (PORT 0 picks a free one; the address is printed on stdout)
//
// Events (all sent by natter-bench over the Engine.IO v4 WebSocket transport):
//   join(room, ack)            join a room; ack() once joined
//   send(room, payload, ack)   emit "msg" with the payload to everyone in the room (the sender
//                              included, as Natter echoes a message to its sender), then ack()
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || process.env.PORT || 0);
const httpServer = http.createServer();
const io = new Server(httpServer, {
  // The bench speaks WebSocket only; no HTTP long-polling, no compression.
  transports: ["websocket"],
  perMessageDeflate: false,
  serveClient: false,
  maxHttpBufferSize: 1e6,
});

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(String(room));
    if (typeof ack === "function") ack();
  });
  socket.on("send", (room, payload, ack) => {
    io.to(String(room)).emit("msg", payload);
    if (typeof ack === "function") ack();
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  const { address, port } = httpServer.address();
  console.log(`socketio listening on http://${address}:${port}`);
});

function stop() {
  io.close();
  httpServer.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
