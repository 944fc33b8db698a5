"""The Mosquitto the tests start: real, on a free loopback port, restartable with persistence."""

import queue

import paho.mqtt.client as mqtt


def _client(broker, name):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def test_retained_message_survives_a_clean_broker_restart(broker):
    pub = _client(broker, "pub")
    info = pub.publish("andon/v1/t/L1/state", b'{"state":"running"}', qos=1, retain=True)
    info.wait_for_publish(5)
    pub.loop_stop()
    pub.disconnect()
    broker.restart()

    got: queue.Queue = queue.Queue()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sub")
    sub.on_message = lambda c, u, m: got.put((m.topic, m.payload, m.retain))
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("andon/v1/#", qos=1)
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    try:
        assert got.get(timeout=5) == ("andon/v1/t/L1/state", b'{"state":"running"}', True)
    finally:
        sub.loop_stop()
        sub.disconnect()
