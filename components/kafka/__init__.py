"""The local single-node Kafka broker (KRaft) from Maven Central jars."""
