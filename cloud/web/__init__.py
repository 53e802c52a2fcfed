"""The web app: a Folium map of devices and detections, device pages, a JSON API."""
