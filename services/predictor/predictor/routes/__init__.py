"""The predictor's routes: thin handlers over :class:`predictor.service.PredictorService`."""

from predictor.routes import feedback, model, serving

routers = [serving.router, model.router, feedback.router]
