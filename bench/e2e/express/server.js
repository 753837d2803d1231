// The seed's own receiver, as LTVboost's page writes it, made to work:
// express.raw keeps the bytes (the page's version HMACs a re-serialised
// body), then the documented HMAC and `===` compare, JSON.parse and a switch.
const express = require('express');
const crypto = require('crypto');

const SECRET = process.env.WEBHOOK_SECRET || 'ltvboost-development-secret-do-not-use-in-production';
const port = Number(process.argv[2] || 4003);
const app = express();

function verifySignature(signature, payload) {
  const expectedSignature = crypto.createHmac('sha256', SECRET).update(payload).digest('hex');
  return signature === `sha256=${expectedSignature}`;
}

let handled = 0;
app.post('/webhooks/ltvboost', express.raw({ type: '*/*', limit: '1mb' }), (req, res) => {
  const signature = req.headers['x-ltvboost-signature'];
  if (!verifySignature(signature, req.body)) {
    return res.status(401).send('Invalid signature');
  }
  const event = JSON.parse(req.body);
  switch (event.type) {
    case 'response.created':
      handled += event.data.id ? 1 : 0;
      break;
    case 'action.sent':
      handled += 1;
      break;
  }
  res.status(200).send('OK');
});

app.listen(port, '127.0.0.1', () => console.error(`express on 127.0.0.1:${port}`));
